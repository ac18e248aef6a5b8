import type { Clock } from '@handoff/shared';
import { AppError, ErrorCode, type Frame } from '@handoff/shared';
import type { Logger } from 'pino';
import { em, type Orm } from '../infra/db/orm.js';
import type { Notifier } from '../hooks/notifier.js';
import { CoalescedReads, TurnPacer } from '../infra/coalesced-reads.js';
import { metrics, secondsSince } from '../metrics.js';
import { framesAfter, insertFramesIfOwned, lastRecordedSeq, newestFrames } from './recording-queries.js';

export interface TerminalOptions {
  /** Recording writes are batched: the first write of a burst waits this many ms. Default 50. */
  flushMs?: number;
  /** How many frames a subscriber without `afterSeq` gets as scrollback. Default 2000. */
  tailFrames?: number;
  /** Frames other hub nodes broadcast but have not recorded yet (multi-node only). */
  peerPending?: (runId: string) => Promise<Frame[]>;
  /** Most frame data (characters) a run stream holds unrecorded; past it new frames wait on the worker. Default 4 MiB. */
  maxPendingChars?: number;
  /** Most frame data (characters) a run stream keeps as its in-memory tail for late joiners (besides `tailFrames`). Default 4 MiB. */
  maxTailChars?: number;
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
  /**
   * The newest accepted frames, gapless and ending at `accepted` (at most `tailFrames` frames
   * and `maxTailChars`): late joiners of a hot stream get their scrollback from here, not
   * from the database. Empty after attach until frames arrive or a database read seeds it.
   */
  tail: Frame[];
  tailChars: number;
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
  private readonly maxTailChars: number;
  /** Database scrollback reads, shared by the subscribers of a run that ask at once. */
  private readonly reads = new CoalescedReads<Scrollback>();
  /** Scrollback answers leave one per event-loop turn: a burst never holds live frames back. */
  private readonly pacer = new TurnPacer();

  constructor(
    private readonly orm: Orm,
    private readonly notifier: Notifier,
    private readonly log: Logger,
    private readonly clock: Clock,
    options: TerminalOptions = {},
  ) {
    this.flushMs = options.flushMs ?? 50;
    this.tailFrames = options.tailFrames ?? 2000;
    this.maxPendingChars = options.maxPendingChars ?? 4 * 1024 * 1024;
    this.retryMs = options.retryMs ?? 250;
    this.peerPending = options.peerPending ?? (async () => []);
    this.maxTailChars = options.maxTailChars ?? 4 * 1024 * 1024;
  }

  /** True when this node streams `runId` from that socket and recently found the run to be its feeder's. */
  private isVerified(runId: string, socketId: string): boolean {
    const s = this.streams.get(runId);
    return !!s && !s.closing && s.feeder.socketId === socketId && this.clock.now() - s.verifiedAt < REVERIFY_AFTER_MS;
  }

  /**
   * The run just started on the feeder's socket (its start report was taken, which checked in
   * the database that the run is this worker's): its stream is attached and verified now, ahead
   * of the first frames, which then go out without an ownership read of their own.
   */
  async opened(runId: string, feeder: StreamFeeder): Promise<void> {
    const s = await this.attach(runId, feeder);
    s.verifiedAt = this.clock.now();
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
      const recorded = await lastRecordedSeq(em(this.orm), runId);
      const again = this.streams.get(runId);
      if (again) continue; // another ingest attached meanwhile: use (or replace) that one
      const last = Number(recorded ?? 0);
      const fresh: RunStream = { runId, feeder, accepted: last, committed: last, pending: [], pendingChars: 0, waiters: [], writer: null, closing: false, failing: false, verifiedAt: this.clock.now(), tail: [], tailChars: 0 };
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
    if (verified) s.verifiedAt = this.clock.now();
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
      s.tail.push(f);
      s.tailChars += f.data.length;
    }
    if (accepted.length) this.trimTail(s);
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
        // Only while the run is still the feeder's and active (see `insertFramesIfOwned`).
        owned = await insertFramesIfOwned(em(this.orm), s.runId, s.feeder.workerId, batch);
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
      s.verifiedAt = this.clock.now();
      metrics.recordingFlush.observe(secondsSince(started));
      metrics.pendingFrames.dec(batch.length);
      s.pending.splice(0, batch.length);
      s.pendingChars -= chars;
      s.committed = batch[batch.length - 1]!.seq;
      this.settleWaiters(s, false);
    }
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
   * The scrollback a subscriber gets after joining the run's terminal room: frames after
   * `afterSeq`, or the recent tail. From this node's in-memory tail when it ingests the run
   * and the tail covers the request; otherwise from the database (merged with what any node
   * has broadcast but not recorded), one read shared by the subscribers asking at once.
   */
  async scrollback(runId: string, afterSeq?: number): Promise<Scrollback> {
    const answer = this.fromTail(runId, afterSeq) ?? (await this.reads.read(`${runId}:${afterSeq ?? 'tail'}`, () => this.load(runId, afterSeq)));
    await this.pacer.turn();
    return answer;
  }

  /** Served from memory when the stream's tail reaches back far enough; else null. */
  private fromTail(runId: string, afterSeq: number | undefined): Scrollback | null {
    const s = this.streams.get(runId);
    if (!s || s.closing) return null;
    const tailStart = s.tail.length ? s.tail[0]!.seq : s.accepted + 1;
    if (afterSeq === undefined) {
      const from = Math.max(1, s.accepted - this.tailFrames + 1);
      if (tailStart > from) return null;
      return { frames: s.tail.slice(from - tailStart).map(copyFrame), truncated: from > 1 };
    }
    if (tailStart > afterSeq + 1) return null;
    const after = s.tail.slice(Math.max(0, afterSeq + 1 - tailStart));
    return { frames: after.slice(0, this.tailFrames).map(copyFrame), truncated: after.length > this.tailFrames };
  }

  /**
   * Recorded frames after `afterSeq` (or the recent tail), merged with the frames any
   * node has broadcast but not yet recorded. The unrecorded ones are read first: a frame
   * leaves a pending buffer only after its insert committed, so it is in one or the other.
   * A tail read seeds this node's stream tail, so the next subscribers are served from memory.
   */
  private async load(runId: string, afterSeq?: number): Promise<Scrollback> {
    const pendingHere = [...this.pendingFrames(runId), ...(await this.peerPending(runId))];
    const limit = this.tailFrames;
    const rows =
      afterSeq === undefined
        ? await newestFrames(em(this.orm), runId, limit + 1)
        : await framesAfter(em(this.orm), runId, afterSeq, limit + 1);
    const truncated = rows.length > limit;
    const persisted = afterSeq === undefined ? rows.slice(truncated ? 1 : 0) : rows.slice(0, limit);
    const bySeq = new Map<number, Frame>();
    for (const f of [...persisted, ...pendingHere]) if (afterSeq === undefined || f.seq > afterSeq) bySeq.set(f.seq, { seq: f.seq, t: f.t, data: f.data });
    const frames = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
    if (afterSeq === undefined) this.seedTail(runId, frames);
    return { frames, truncated };
  }

  /** Puts frames read from the database in front of the stream's tail, when they join it without a gap. */
  private seedTail(runId: string, frames: Frame[]): void {
    const s = this.streams.get(runId);
    if (!s || s.closing || !frames.length) return;
    const tailStart = s.tail.length ? s.tail[0]!.seq : s.accepted + 1;
    const older = frames.filter((f) => f.seq < tailStart);
    if (!older.length || older[older.length - 1]!.seq !== tailStart - 1) return;
    for (let i = 1; i < older.length; i++) if (older[i]!.seq !== older[i - 1]!.seq + 1) return;
    s.tail = [...older, ...s.tail];
    s.tailChars += older.reduce((n, f) => n + f.data.length, 0);
    this.trimTail(s);
  }

  private trimTail(s: RunStream): void {
    let drop = 0;
    while (s.tail.length - drop > this.tailFrames || (s.tail.length - drop > 1 && s.tailChars > this.maxTailChars)) {
      s.tailChars -= s.tail[drop]!.data.length;
      drop += 1;
    }
    if (drop) s.tail.splice(0, drop);
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

/** What a subscriber gets first: frames in seq order; `truncated` when older ones exist. */
export interface Scrollback {
  frames: Frame[];
  truncated: boolean;
}

const copyFrame = (f: Frame): Frame => ({ seq: f.seq, t: f.t, data: f.data });

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
