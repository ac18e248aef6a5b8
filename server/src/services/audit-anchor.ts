import type { Logger } from 'pino';
import type { AuditHead, AuditPublicKey } from '@handoff/shared';
import { em, type Em, type Orm } from '../db/orm.js';
import { headSignatureValid, signHead, signingKeyFromSeed, type SigningKey } from '../domain/audit-head.js';
import { uuidv7 } from './ids.js';
import { loadSecretKey } from './secret-box.js';

/** The file in HANDOFF_DATA_DIR that holds the generated signing seed (hex, mode 0600). */
const SIGNING_KEY_FILE = 'audit-signing.key';
/** Runs checkpointed per sweep at most: a backlog drains over a few sweeps, never in one long one. */
export const CHECKPOINT_BATCH = 500;
/**
 * Rows are looked for from the sweep watermark minus this, so clock skew between nodes (each
 * stamps rows with its own clock) cannot hide a row from the sweep.
 */
const CLOCK_SLACK_MS = 5 * 60_000;

/** Runs whose chain has rows newer than the bound and past their newest checkpoint, with their head. */
export const GROWN_CHAINS_SQL = `with grown as (
    select e.run_id, max(e.seq) as seq, max(e.at) as rows_until from control_events e
     where e.at > ? and e.run_id is not null
     group by e.run_id
    having max(e.seq) > coalesce((select max(c.seq) from audit_checkpoints c where c.run_id = e.run_id), 0)
     order by rows_until
     limit ${CHECKPOINT_BATCH})
  select g.run_id, g.seq, e.hash, g.rows_until from grown g join control_events e on e.run_id = g.run_id and e.seq = g.seq
   order by g.rows_until`;

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
  private lastSweep = Date.now();

  constructor(
    private readonly orm: Orm,
    private readonly key: SigningKey,
    private readonly log: Logger,
    private readonly options: { /** AUDIT_CHECKPOINT_INTERVAL, ms. */ intervalMs: number },
  ) {}

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
    if (at) await this.store(tx, head, at, 'exit');
    return head;
  }

  private async signedHead(tx: Em, runId: string): Promise<{ head: AuditHead; at: Date | null }> {
    const [top] = await tx.execute<{ seq: number; hash: string; at: Date }[]>('select seq, hash, at from control_events where run_id = ? order by seq desc limit 1', [runId]);
    const head = signHead(this.key, { runId, seq: top?.seq ?? 0, hash: top?.hash ?? '', signedAt: new Date().toISOString() });
    return { head, at: top ? new Date(top.at) : null };
  }

  /**
   * Compares a run's intact chain of `rows` rows with its newest checkpoint signed by this
   * key: a checkpoint beyond the chain's end is a cut tail, one naming another hash a
   * rewritten chain, one whose signature fails a forged row. Null when they agree (or there
   * is no checkpoint yet).
   */
  async checkAgainstCheckpoint(tx: Em, runId: string, rows: number): Promise<{ seq: number; id?: string; reason: string } | null> {
    const [cp] = await tx.execute<{ seq: number; hash: string; signed_at: Date; key_id: string; signature: string }[]>(
      'select seq, hash, signed_at, key_id, signature from audit_checkpoints where run_id = ? and key_id = ? order by seq desc limit 1',
      [runId, this.key.keyId],
    );
    if (!cp) return null;
    const head: AuditHead = { runId, seq: cp.seq, hash: cp.hash, signedAt: new Date(cp.signed_at).toISOString(), keyId: cp.key_id, signature: cp.signature };
    if (!headSignatureValid(this.key.publicKey, head)) return { seq: head.seq, reason: `the checkpoint at seq ${head.seq} has no valid signature (forged)` };
    if (head.seq > rows) return { seq: rows + 1, reason: `cut tail: the checkpoint signed ${head.signedAt} covers seq ${head.seq}, the chain ends at seq ${rows}` };
    const [row] = await tx.execute<{ id: string; hash: string }[]>('select id, hash from control_events where run_id = ? and seq = ?', [runId, head.seq]);
    if (row?.hash !== head.hash) return { seq: head.seq, ...(row ? { id: row.id } : {}), reason: `rewritten chain: row seq ${head.seq} does not have the hash the checkpoint signed ${head.signedAt} names` };
    return null;
  }

  /**
   * Sweeper chore (leader only), at most every AUDIT_CHECKPOINT_INTERVAL: a signed head for
   * each run whose chain grew since its newest checkpoint, at most CHECKPOINT_BATCH runs a
   * sweep (a backlog drains over the next sweeps). Only rows newer than the newest sweep
   * checkpoint's `rows_until` (minus clock slack) are looked at, through control_events_at_idx.
   */
  async checkpointGrown(): Promise<number> {
    if (Date.now() - this.lastSweep < this.options.intervalMs) return 0;
    this.lastSweep = Date.now();
    const tx = em(this.orm);
    // The window's start is a parameter, not a subquery, so the planner sees the real bound
    // and uses control_events_at_idx (test/integration/audit-index.test.ts proves it).
    const [last] = await tx.execute<{ t: Date | null }[]>(`select max(rows_until) as t from audit_checkpoints where source = 'sweep'`);
    const since = last?.t ? new Date(new Date(last.t).getTime() - CLOCK_SLACK_MS) : new Date(0);
    const grown = await tx.execute<{ run_id: string; seq: number; hash: string; rows_until: Date }[]>(GROWN_CHAINS_SQL, [since]);
    const signedAt = new Date().toISOString();
    // Oldest first, each stored before the next: a sweep cut short (batch, crash) resumes
    // where it stopped, the runs it did not reach being newer than the watermark.
    for (const g of grown) await this.store(tx, signHead(this.key, { runId: g.run_id, seq: g.seq, hash: g.hash, signedAt }), new Date(g.rows_until), 'sweep');
    if (grown.length) this.log.debug({ runs: grown.length }, 'audit checkpoints signed');
    // A full batch means a backlog (first start on an old database): continue next sweep.
    if (grown.length === CHECKPOINT_BATCH) this.lastSweep = 0;
    return grown.length;
  }

  private async store(tx: Em, head: AuditHead, rowsUntil: Date, source: 'exit' | 'sweep'): Promise<void> {
    await tx.execute(
      `insert into audit_checkpoints (id, run_id, seq, hash, signed_at, key_id, signature, source, rows_until) values (?, ?, ?, ?, ?, ?, ?, ?, ?)
       on conflict (run_id, seq) do nothing`,
      [uuidv7(), head.runId, head.seq, head.hash, head.signedAt, head.keyId, head.signature, source, rowsUntil],
    );
  }
}
