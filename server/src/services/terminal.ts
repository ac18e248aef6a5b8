import { AppError, ErrorCode, type Frame } from '@handoff/shared';
import type { Logger } from 'pino';
import { em, type Orm } from '../db/orm.js';
import type { Notifier } from './notifier.js';
import { metrics, secondsSince } from '../metrics.js';

export interface TerminalOptions {
  /** Recording writes are batched: the first write of a burst waits this many ms. Default 50. */
  flushMs?: number;
  /** How many frames a subscriber without `afterSeq` gets as scrollback. Default 2000. */
  tailFrames?: number;
  /** Frames other hub nodes broadcast but have not recorded yet (multi-node only). */
  peerPending?: (runId: string) => Promise<Frame[]>;
  /** Most frame data (characters) a run stream holds unrecorded; past it new frames wait on the worker. Default 4 MiB. */
  maxPendingChars?: number;
  /** Delay before retrying a failed recording write, ms (doubles up to 8×). Default 250. */
  retryMs?: number;
}

/** Who feeds a run stream: the worker and the one socket its frames arrive on. */
export interface StreamFeeder {
  workerId: string;
  socketId: string;
}

/** Thrown by `ingest` when the run is no longer this worker's: its worker must stop the run. */
export class RecordingRefused extends AppError {
  constructor(readonly runId: string) {
    super({ code: ErrorCode.FORBIDDEN, message: `run ${runId} is not (any more) running on this worker; its output is refused` });
  }
}

interface Waiter {
  /** Resolve once every frame up to this seq committed (or the write failed). */
  target: number;
  resolve: (committed: number) => void;
  reject: (err: Error) => void;
}

interface RunStream {
  runId: string;
  feeder: StreamFeeder;
  /** Highest seq accepted (broadcast) on this node. */
  accepted: number;
  /** Highest seq whose insert committed (the only seq ever acked to the worker). */
  committed: number;
  /** Accepted but not yet committed, in seq order. */
  pending: Frame[];
  pendingChars: number;
  waiters: Waiter[];
  /** The stream's single writer while it runs (drains `pending` in batches). */
  writer: Promise<void> | null;
  /** Detached (its socket left, the run ended): write what is pending once more, then forget. */
  closing: boolean;
  /** Logged the current write outage (once per outage, not per retry). */
  failing: boolean;
  /** When the run was last known to be the feeder's (attach, or an insert that found it so), ms. */
  verifiedAt: number;
}

/**
 * A stream silent this long re-checks ownership before it broadcasts again: a worker that
 * froze while the hub gave its run up must not reach viewers with one more batch.
 */
const REVERIFY_AFTER_MS = 1000;

/** Most frames / characters one recording insert carries. */
const BATCH_FRAMES = 500;
const BATCH_CHARS = 1024 * 1024;

/**
 * Terminal frames: worker → (gapless by seq) → live broadcast to `run:<id>:term` at once
 * → recording in PostgreSQL by one writer per run stream. The database is never on the
 * live path, but an ack is: `ingest` answers the highest seq whose insert committed, so
 * the worker keeps (and resends) anything not yet recorded — a crash, a failed write or
 * a full buffer loses nothing, and `on conflict do nothing` keeps a resend from
 * duplicating. Every insert is conditional on the run still being the feeding worker's
 * and active, so recording stops the instant the hub gives the run up.
 *
 * A stream lives on the node its worker's socket is on, bound to that socket: it is
 * forgotten when the socket leaves or the run ends, and (re)attached from
 * `max(seq)` in the database — never from a stale memory of an earlier visit.
 */
export class TerminalService {
  private readonly streams = new Map<string, RunStream>();
  private readonly flushMs: number;
  private readonly tailFrames: number;
  private readonly maxPendingChars: number;
  private readonly retryMs: number;
  private readonly peerPending: (runId: string) => Promise<Frame[]>;

  constructor(
    private readonly orm: Orm,
    private readonly notifier: Notifier,
    private readonly log: Logger,
    options: TerminalOptions = {},
  ) {
    this.flushMs = options.flushMs ?? 50;
    this.tailFrames = options.tailFrames ?? 2000;
    this.maxPendingChars = options.maxPendingChars ?? 4 * 1024 * 1024;
    this.retryMs = options.retryMs ?? 250;
    this.peerPending = options.peerPending ?? (async () => []);
  }

  /** True when this node streams `runId` from that socket and recently found the run to be its feeder's. */
  private isVerified(runId: string, socketId: string): boolean {
    const s = this.streams.get(runId);
    return !!s && !s.closing && s.feeder.socketId === socketId && Date.now() - s.verifiedAt < REVERIFY_AFTER_MS;
  }

  private async attach(runId: string, feeder: StreamFeeder): Promise<RunStream> {
    for (;;) {
      const s = this.streams.get(runId);
      if (s && !s.closing && s.feeder.socketId === feeder.socketId) return s;
      // Fed by another socket (the worker came back on a new connection): the old
      // stream's pending frames are written first, then it is forgotten.
      if (s) {
        await this.detach(s);
        continue;
      }
      const [row] = await em(this.orm).execute<{ last: number | null }[]>('select max(seq) as last from recording_chunks where run_id = ?', [runId]);
      const again = this.streams.get(runId);
      if (again) continue; // another ingest attached meanwhile: use (or replace) that one
      const last = Number(row?.last ?? 0);
      const fresh: RunStream = { runId, feeder, accepted: last, committed: last, pending: [], pendingChars: 0, waiters: [], writer: null, closing: false, failing: false, verifiedAt: Date.now() };
      this.streams.set(runId, fresh);
      return fresh;
    }
  }

  /**
   * Frames from the run's worker. Only the next seq is accepted (a gap is filled by the
   * worker's resend, never skipped), and only while the stream's unrecorded data fits
   * its bound. Resolves with the highest seq committed to the recording once the frames
   * accepted so far are written (or their write failed); rejects with `RecordingRefused`
   * when the run is no longer the feeder's.
   */
  async ingest(runId: string, feeder: StreamFeeder, frames: Frame[], verify?: () => Promise<void>): Promise<number> {
    // Ownership is checked (by `verify`, which throws to refuse) when the stream is attached
    // and after a silence; meanwhile every insert re-checks it in the database.
    const verified = !!verify && !this.isVerified(runId, feeder.socketId);
    if (verified) await verify();
    const s = await this.attach(runId, feeder);
    if (verified) s.verifiedAt = Date.now();
    const sorted = [...frames].sort((a, b) => a.seq - b.seq);
    const accepted: Frame[] = [];
    for (const f of sorted) {
      if (f.seq <= s.accepted) continue; // a resend of what is already here
      if (f.seq !== s.accepted + 1) break;
      // Full: the worker keeps the rest until they are acked, and resends them.
      if (s.pendingChars > 0 && s.pendingChars + f.data.length > this.maxPendingChars) break;
      accepted.push(f);
      s.pending.push(f);
      s.pendingChars += f.data.length;
      s.accepted = f.seq;
    }
    if (accepted.length) {
      metrics.pendingFrames.inc(accepted.length);
      this.notifier.termFrames(runId, accepted);
      this.startWriter(s);
    }
    if (s.committed >= s.accepted) return s.committed;
    return new Promise<number>((resolve, reject) => s.waiters.push({ target: s.accepted, resolve, reject }));
  }

  private startWriter(s: RunStream): void {
    if (s.writer) return;
    s.writer = (async () => {
      try {
        if (!s.closing) await sleep(this.flushMs);
        await this.drain(s);
      } catch (err) {
        this.log.error({ err, runId: s.runId }, 'recording writer failed');
      } finally {
        s.writer = null;
        // Frames that arrived after the last batch was taken: the next writer takes them.
        if (s.pending.length && this.streams.get(s.runId) === s) this.startWriter(s);
      }
    })();
  }

  /** The one writer of a stream: batches in seq order, retried with a backoff until written. */
  private async drain(s: RunStream): Promise<void> {
    let failures = 0;
    while (s.pending.length && this.streams.get(s.runId) === s) {
      const batch: Frame[] = [];
      let chars = 0;
      for (const f of s.pending) {
        if (batch.length >= BATCH_FRAMES || (batch.length && chars + f.data.length > BATCH_CHARS)) break;
        batch.push(f);
        chars += f.data.length;
      }
      let owned: boolean;
      const started = performance.now();
      try {
        owned = await this.insert(s, batch);
      } catch (err) {
        failures += 1;
        if (!s.failing) {
          s.failing = true;
          this.log.error({ err, runId: s.runId, pending: s.pending.length }, 'recording write failed; retrying (the worker keeps the frames until they are written)');
        }
        // Answer what is committed: the worker keeps the rest and sends it again.
        this.settleWaiters(s, true);
        if (s.closing) {
          this.forget(s); // its socket is gone: another node takes the resend
          return;
        }
        await sleep(this.retryMs * Math.min(8, 2 ** (failures - 1)));
        continue;
      }
      if (s.failing) {
        s.failing = false;
        this.log.info({ runId: s.runId }, 'recording writes resumed');
      }
      failures = 0;
      if (!owned) {
        this.refuse(s);
        return;
      }
      s.verifiedAt = Date.now();
      metrics.recordingFlush.observe(secondsSince(started));
      metrics.pendingFrames.dec(batch.length);
      s.pending.splice(0, batch.length);
      s.pendingChars -= chars;
      s.committed = batch[batch.length - 1]!.seq;
      this.settleWaiters(s, false);
    }
  }

  /**
   * Writes a batch only if the run is still the feeding worker's and active. `for share`
   * orders the insert against a concurrent loss/cancel/requeue of the run: either the
   * frames commit before it, or the insert sees the run given up and writes nothing.
   */
  private async insert(s: RunStream, batch: Frame[]): Promise<boolean> {
    const rows = await em(this.orm).execute<{ owned: boolean }[]>(
      `with owner as (
         select 1 from runs where id = ? and worker_id = ? and status in ('assigned','running') for share
       ), written as (
         insert into recording_chunks (run_id, seq, t, data)
         select ?::uuid, f.seq, f.t, f.data from json_to_recordset(?::json) as f(seq int, t int, data text)
          where exists (select 1 from owner)
         on conflict do nothing
         returning 1
       )
       select exists (select 1 from owner) as owned, (select count(*) from written) as n`,
      [s.runId, s.feeder.workerId, s.runId, JSON.stringify(batch.map((f) => ({ seq: f.seq, t: f.t, data: f.data })))],
    );
    return !!rows[0]?.owned;
  }

  private settleWaiters(s: RunStream, failed: boolean): void {
    const keep: Waiter[] = [];
    for (const w of s.waiters) {
      if (failed || w.target <= s.committed) w.resolve(s.committed);
      else keep.push(w);
    }
    s.waiters = keep;
  }

  /** The run is no longer the feeder's: refuse what is waiting and forget the stream. */
  private refuse(s: RunStream): void {
    this.log.warn({ runId: s.runId, workerId: s.feeder.workerId, dropped: s.pending.length }, 'run no longer on this worker: its output is refused');
    for (const w of s.waiters.splice(0)) w.reject(new RecordingRefused(s.runId));
    this.forget(s);
  }

  private forget(s: RunStream): void {
    for (const w of s.waiters.splice(0)) w.resolve(s.committed);
    metrics.pendingFrames.dec(s.pending.length);
    s.pending = [];
    s.pendingChars = 0;
    if (this.streams.get(s.runId) === s) this.streams.delete(s.runId);
  }

  /** Writes what is pending (one more try if the database fails), then forgets the stream. */
  private async detach(s: RunStream): Promise<void> {
    s.closing = true;
    if (s.pending.length) this.startWriter(s);
    while (s.writer) await s.writer;
    this.forget(s);
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

  /** Writes what this node holds of a run and forgets its stream (run ended, run re-adopted). */
  async close(runId: string): Promise<void> {
    const s = this.streams.get(runId);
    if (s) await this.detach(s);
  }

  /** A worker socket left this node: write and forget every stream it fed. */
  async closeSocket(socketId: string): Promise<void> {
    await Promise.all([...this.streams.values()].filter((s) => s.feeder.socketId === socketId).map((s) => this.detach(s)));
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.streams.values()].map((s) => this.detach(s)));
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
