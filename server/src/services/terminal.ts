import type { Frame } from '@handoff/shared';
import type { Logger } from 'pino';
import { em, type Orm } from '../db/orm.js';
import type { Notifier } from './notifier.js';
import { metrics, secondsSince } from '../metrics.js';

export interface TerminalOptions {
  /** Recording writes are batched: flush after this many ms. Default 50. */
  flushMs?: number;
  /** How many frames a subscriber without `afterSeq` gets as scrollback. Default 2000. */
  tailFrames?: number;
  /** Frames other hub nodes broadcast but have not recorded yet (multi-node only). */
  peerPending?: (runId: string) => Promise<Frame[]>;
}

interface RunStream {
  /** Highest seq accepted (broadcast) on this node. */
  lastSeq: number;
  /** Broadcast but not yet persisted, in seq order. */
  pending: Frame[];
  /** Resolvers of ingest() calls waiting for the next flush. */
  waiters: Array<() => void>;
  timer: NodeJS.Timeout | null;
  flushing: Promise<void>;
}

/**
 * Terminal frames: worker → (dedupe by seq) → live broadcast to `run:<id>:term` at once
 * → recording in PostgreSQL in batches. The database is never on the live path; a
 * frame is acked to the worker only once it is persisted, so the worker resends
 * anything a crash lost and nothing is recorded twice.
 */
export class TerminalService {
  private readonly streams = new Map<string, RunStream>();
  private readonly flushMs: number;
  private readonly tailFrames: number;
  private readonly peerPending: (runId: string) => Promise<Frame[]>;

  constructor(
    private readonly orm: Orm,
    private readonly notifier: Notifier,
    private readonly log: Logger,
    options: TerminalOptions = {},
  ) {
    this.flushMs = options.flushMs ?? 50;
    this.tailFrames = options.tailFrames ?? 2000;
    this.peerPending = options.peerPending ?? (async () => []);
  }

  private async stream(runId: string): Promise<RunStream> {
    let s = this.streams.get(runId);
    if (!s) {
      const [row] = await em(this.orm).execute<{ last: number | null }[]>('select max(seq) as last from recording_chunks where run_id = ?', [runId]);
      s = this.streams.get(runId); // another ingest may have created it meanwhile
      if (!s) {
        s = { lastSeq: row?.last ?? 0, pending: [], waiters: [], timer: null, flushing: Promise.resolve() };
        this.streams.set(runId, s);
      }
    }
    return s;
  }

  /** Accepts frames from the run's worker; resolves with the last persisted seq. */
  async ingest(runId: string, frames: Frame[]): Promise<number> {
    const s = await this.stream(runId);
    const fresh = frames.filter((f) => f.seq > s.lastSeq).sort((a, b) => a.seq - b.seq);
    const accepted: Frame[] = [];
    for (const f of fresh) {
      // Frames must continue the sequence; a gap means an earlier batch is still in flight.
      if (f.seq !== s.lastSeq + 1) break;
      accepted.push(f);
      s.lastSeq = f.seq;
    }
    if (accepted.length) {
      s.pending.push(...accepted);
      metrics.pendingFrames.inc(accepted.length);
      this.notifier.termFrames(runId, accepted);
    }
    await new Promise<void>((resolve) => {
      s.waiters.push(resolve);
      s.timer ??= setTimeout(() => void this.flush(runId, s), this.flushMs);
    });
    return s.lastSeq;
  }

  private async flush(runId: string, s: RunStream): Promise<void> {
    s.timer = null;
    const batch = s.pending.slice();
    const waiters = s.waiters.splice(0);
    s.flushing = s.flushing.then(async () => {
      if (batch.length) {
        try {
          const started = performance.now();
          const values = batch.map(() => '(?, ?, ?, ?)').join(', ');
          const params = batch.flatMap((f) => [runId, f.seq, f.t, f.data]);
          await em(this.orm).execute(`insert into recording_chunks (run_id, seq, t, data) values ${values} on conflict do nothing`, params);
          s.pending.splice(0, batch.length);
          metrics.recordingFlush.observe(secondsSince(started));
          metrics.pendingFrames.dec(batch.length);
        } catch (err) {
          // Not acked as persisted: keep them pending; the worker still holds them too.
          this.log.error({ err, runId }, 'recording write failed');
        }
      }
      for (const w of waiters) w();
    });
    await s.flushing;
  }

  /**
   * Recorded frames after `afterSeq` (or the recent tail), merged with the frames any
   * node has broadcast but not yet recorded. The unrecorded ones are read first: a frame
   * leaves a pending buffer only after its insert committed, so it is in one or the other.
   */
  async scrollback(runId: string, afterSeq?: number): Promise<{ frames: Frame[]; truncated: boolean }> {
    const pendingHere = [...this.pendingFrames(runId), ...(await this.peerPending(runId))];
    const limit = this.tailFrames;
    const rows =
      afterSeq === undefined
        ? (await em(this.orm).execute<Frame[]>('select seq, t, data from recording_chunks where run_id = ? order by seq desc limit ?', [runId, limit + 1])).reverse()
        : await em(this.orm).execute<Frame[]>('select seq, t, data from recording_chunks where run_id = ? and seq > ? order by seq limit ?', [runId, afterSeq, limit + 1]);
    const truncated = rows.length > limit;
    const persisted = afterSeq === undefined ? rows.slice(truncated ? 1 : 0) : rows.slice(0, limit);
    const bySeq = new Map<number, Frame>();
    for (const f of [...persisted, ...pendingHere]) if (afterSeq === undefined || f.seq > afterSeq) bySeq.set(f.seq, { seq: f.seq, t: f.t, data: f.data });
    return { frames: [...bySeq.values()].sort((a, b) => a.seq - b.seq), truncated };
  }

  /** Frames not yet persisted on this node (asked for by other nodes for late joiners). */
  pendingFrames(runId: string): Frame[] {
    return [...(this.streams.get(runId)?.pending ?? [])];
  }

  /** Flushes and forgets a finished run's stream. */
  async close(runId: string): Promise<void> {
    const s = this.streams.get(runId);
    if (!s) return;
    if (s.timer) {
      clearTimeout(s.timer);
      await this.flush(runId, s);
    }
    await s.flushing;
    this.streams.delete(runId);
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.streams.keys()].map((id) => this.close(id)));
  }
}
