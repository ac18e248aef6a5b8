import type { Logger } from 'pino';
import type { AuditHead, AuditPublicKey, Clock } from '@handoff/shared';
import { em, type Em, type Orm } from '../infra/db/orm.js';
import { headSignatureValid, signHead, signingKeyFromSeed, type SigningKey } from '../domain/audit-head.js';
import { loadSecretKey } from '../infra/secret-box.js';
import { auditRowAt, chainTop, CHECKPOINT_BATCH, grownChains, insertCheckpoint, newestCheckpoint, sweepWatermark } from './audit-anchor-queries.js';

/** The file in HANDOFF_DATA_DIR that holds the generated signing seed (hex, mode 0600). */
const SIGNING_KEY_FILE = 'audit-signing.key';
/**
 * Rows are looked for from the sweep watermark minus this, so clock skew between nodes (each
 * stamps rows with its own clock) cannot hide a row from the sweep.
 */
const CLOCK_SLACK_MS = 5 * 60_000;

/** The hub's Ed25519 audit signing key: HANDOFF_AUDIT_SIGNING_KEY, or generated into the data dir. */
export function loadAuditSigningKey(opts: { configured?: string | undefined; dataDir: string }): SigningKey {
  return signingKeyFromSeed(loadSecretKey({ configured: opts.configured, dataDir: opts.dataDir, file: SIGNING_KEY_FILE, setting: 'HANDOFF_AUDIT_SIGNING_KEY' }));
}

/**
 * Signs audit chain heads (docs/audit.md): on demand for `…/events`, and into the append-only
 * `audit_checkpoints` table when a run ends and, on the sweeper leader, for chains that grew.
 */
export class AuditAnchor {
  /** When this node last swept for grown chains; the first sweep waits one interval after start. */
  private lastSweep: number;

  constructor(
    private readonly orm: Orm,
    private readonly key: SigningKey,
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly options: { /** AUDIT_CHECKPOINT_INTERVAL, ms. */ intervalMs: number },
  ) {
    this.lastSweep = clock.now();
  }

  publicKey(): AuditPublicKey {
    return {
      algorithm: 'Ed25519',
      keyId: this.key.keyId,
      publicKey: this.key.publicRaw.toString('base64'),
      pem: this.key.publicKey.export({ format: 'pem', type: 'spki' }).toString(),
    };
  }

  /** The run's chain head now, signed. An empty chain has seq 0 and hash ''. */
  async head(tx: Em, runId: string): Promise<AuditHead> {
    return (await this.signedHead(tx, runId)).head;
  }

  /** Stores the run's signed head (idempotent per chain position). */
  async checkpoint(runId: string): Promise<AuditHead> {
    const tx = em(this.orm);
    const { head, at } = await this.signedHead(tx, runId);
    if (at) await insertCheckpoint(tx, head, at, 'exit');
    return head;
  }

  private async signedHead(tx: Em, runId: string): Promise<{ head: AuditHead; at: Date | null }> {
    const top = await chainTop(tx, runId);
    const head = signHead(this.key, { runId, seq: top?.seq ?? 0, hash: top?.hash ?? '', signedAt: this.clock.date().toISOString() });
    return { head, at: top ? new Date(top.at) : null };
  }

  /**
   * Compares a run's intact chain of `rows` rows with its newest checkpoint signed by this
   * key: a checkpoint beyond the chain's end is a cut tail, one naming another hash a
   * rewritten chain, one whose signature fails a forged row. Null when they agree (or there
   * is no checkpoint yet).
   */
  async checkAgainstCheckpoint(tx: Em, runId: string, rows: number): Promise<{ seq: number; id?: string; reason: string } | null> {
    const cp = await newestCheckpoint(tx, runId, this.key.keyId);
    if (!cp) return null;
    const head: AuditHead = { runId, seq: cp.seq, hash: cp.hash, signedAt: new Date(cp.signed_at).toISOString(), keyId: cp.key_id, signature: cp.signature };
    if (!headSignatureValid(this.key.publicKey, head)) return { seq: head.seq, reason: `the checkpoint at seq ${head.seq} has no valid signature (forged)` };
    if (head.seq > rows) return { seq: rows + 1, reason: `cut tail: the checkpoint signed ${head.signedAt} covers seq ${head.seq}, the chain ends at seq ${rows}` };
    const row = await auditRowAt(tx, runId, head.seq);
    if (row?.hash !== head.hash) return { seq: head.seq, ...(row ? { id: row.id } : {}), reason: `rewritten chain: row seq ${head.seq} does not have the hash the checkpoint signed ${head.signedAt} names` };
    return null;
  }

  /**
   * Sweeper chore (leader only), at most every AUDIT_CHECKPOINT_INTERVAL: a signed head for
   * each run whose chain grew since its newest checkpoint, at most CHECKPOINT_BATCH runs a
   * sweep (a backlog drains over the next sweeps). Only rows newer than the newest sweep
   * checkpoint's `rows_until` (minus clock slack) are looked at, through audit_events_at_idx.
   */
  async checkpointGrown(): Promise<number> {
    if (this.clock.now() - this.lastSweep < this.options.intervalMs) return 0;
    this.lastSweep = this.clock.now();
    const tx = em(this.orm);
    // The window's start is a parameter, not a subquery (see `sweepWatermark`).
    const watermark = await sweepWatermark(tx);
    const since = watermark ? new Date(new Date(watermark).getTime() - CLOCK_SLACK_MS) : new Date(0);
    const grown = await grownChains(tx, since);
    const signedAt = this.clock.date().toISOString();
    // Oldest first, each stored before the next: a sweep cut short (batch, crash) resumes
    // where it stopped, the runs it did not reach being newer than the watermark.
    for (const g of grown) await insertCheckpoint(tx, signHead(this.key, { runId: g.run_id, seq: g.seq, hash: g.hash, signedAt }), new Date(g.rows_until), 'sweep');
    if (grown.length) this.log.debug({ runs: grown.length }, 'audit checkpoints signed');
    // A full batch means a backlog (first start on an old database): continue next sweep.
    if (grown.length === CHECKPOINT_BATCH) this.lastSweep = 0;
    return grown.length;
  }
}
