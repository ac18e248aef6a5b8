import type { Logger } from 'pino';
import type { AuditHead, AuditPublicKey } from '@handoff/shared';
import { em, type Em, type Orm } from '../db/orm.js';
import { signHead, signingKeyFromSeed, type SigningKey } from '../domain/audit-head.js';
import { uuidv7 } from './ids.js';
import { loadSecretKey } from './secret-box.js';

/** The file in HANDOFF_DATA_DIR that holds the generated signing seed (hex, mode 0600). */
const SIGNING_KEY_FILE = 'audit-signing.key';
/** Runs checkpointed per sweep at most: a backlog drains over a few sweeps, never in one long one. */
const CHECKPOINT_BATCH = 500;
/**
 * Rows are looked for from the newest checkpoint's time minus this, so clock skew between
 * nodes (rows and heads are stamped by the node's clock) cannot hide a row from the sweep.
 */
const CLOCK_SLACK_MS = 5 * 60_000;

/** Runs whose chain has rows newer than the bound and past their newest checkpoint, with their head. */
export const GROWN_CHAINS_SQL = `with grown as (
    select e.run_id, max(e.seq) as seq from control_events e
     where e.at > ? and e.run_id is not null
     group by e.run_id
    having max(e.seq) > coalesce((select max(c.seq) from audit_checkpoints c where c.run_id = e.run_id), 0)
     limit ${CHECKPOINT_BATCH})
  select g.run_id, g.seq, e.hash from grown g join control_events e on e.run_id = g.run_id and e.seq = g.seq`;

/** The hub's Ed25519 audit signing key: HANDOFF_AUDIT_SIGNING_KEY, or generated into the data dir. */
export function loadAuditSigningKey(opts: { configured?: string | undefined; dataDir: string }): SigningKey {
  return signingKeyFromSeed(loadSecretKey({ configured: opts.configured, dataDir: opts.dataDir, file: SIGNING_KEY_FILE, setting: 'HANDOFF_AUDIT_SIGNING_KEY' }));
}

/**
 * Signs audit chain heads (docs/audit.md): on demand for `…/events`, and into the append-only
 * `audit_checkpoints` table when a run ends and, on the sweeper leader, for chains that grew.
 */
export class AuditAnchor {
  private lastSweep = 0;

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

  /** The run's chain head now (or at `maxSeq`), signed. An empty chain has seq 0 and hash ''. */
  async head(tx: Em, runId: string, maxSeq?: number): Promise<AuditHead> {
    const [top] = await tx.execute<{ seq: number; hash: string }[]>(
      maxSeq === undefined
        ? 'select seq, hash from control_events where run_id = ? order by seq desc limit 1'
        : 'select seq, hash from control_events where run_id = ? and seq <= ? order by seq desc limit 1',
      maxSeq === undefined ? [runId] : [runId, maxSeq],
    );
    return signHead(this.key, { runId, seq: top?.seq ?? 0, hash: top?.hash ?? '', signedAt: new Date().toISOString() });
  }

  /** Stores the run's signed head (idempotent per chain position). */
  async checkpoint(runId: string): Promise<AuditHead> {
    const tx = em(this.orm);
    const head = await this.head(tx, runId);
    if (head.seq > 0) await this.store(tx, head, 'exit');
    return head;
  }

  /** The newest stored head of a run, if any. */
  async latestCheckpoint(tx: Em, runId: string): Promise<AuditHead | null> {
    const [row] = await tx.execute<{ seq: number; hash: string; signed_at: Date; key_id: string; signature: string }[]>(
      'select seq, hash, signed_at, key_id, signature from audit_checkpoints where run_id = ? order by seq desc limit 1',
      [runId],
    );
    return row ? { runId, seq: row.seq, hash: row.hash, signedAt: new Date(row.signed_at).toISOString(), keyId: row.key_id, signature: row.signature } : null;
  }

  /**
   * Sweeper chore (leader only), at most every AUDIT_CHECKPOINT_INTERVAL: a signed head for
   * each run whose chain grew since its newest checkpoint. Only rows written since the newest
   * sweep checkpoint (minus clock slack) are looked at, through control_events_at_idx; a
   * sweep that found nothing writes nothing, so the window then reaches back to the last
   * sweep that did — still only the rows written since.
   */
  async checkpointGrown(): Promise<number> {
    if (Date.now() - this.lastSweep < this.options.intervalMs) return 0;
    this.lastSweep = Date.now();
    const tx = em(this.orm);
    // The window's start is a parameter, not a subquery, so the planner sees the real bound
    // and uses control_events_at_idx (test/integration/audit-index.test.ts proves it).
    const [last] = await tx.execute<{ t: Date | null }[]>(`select max(signed_at) as t from audit_checkpoints where source = 'sweep'`);
    const since = last?.t ? new Date(new Date(last.t).getTime() - CLOCK_SLACK_MS) : new Date(0);
    const grown = await tx.execute<{ run_id: string; seq: number; hash: string }[]>(GROWN_CHAINS_SQL, [since]);
    const signedAt = new Date().toISOString();
    for (const g of grown) await this.store(tx, signHead(this.key, { runId: g.run_id, seq: g.seq, hash: g.hash, signedAt }), 'sweep');
    if (grown.length) this.log.debug({ runs: grown.length }, 'audit checkpoints signed');
    return grown.length;
  }

  private async store(tx: Em, head: AuditHead, source: 'exit' | 'sweep'): Promise<void> {
    await tx.execute(
      `insert into audit_checkpoints (id, run_id, seq, hash, signed_at, key_id, signature, source) values (?, ?, ?, ?, ?, ?, ?, ?)
       on conflict (run_id, seq) do nothing`,
      [uuidv7(), head.runId, head.seq, head.hash, head.signedAt, head.keyId, head.signature, source],
    );
  }
}
