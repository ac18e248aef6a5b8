import type { Frame } from '@handoff/shared';

export interface FrameBatcherOptions {
  /** A frame is sealed at the latest this many ms after its first character arrived (FRAME_FLUSH_MS; 16). */
  flushMs: number;
  /**
   * A frame is sealed once no output came for this many ms, before `flushMs` ran out:
   * output that stops (a prompt, a line, an echo) goes at once, while a stream keeps
   * filling frames up to `flushMs`. Default 2; 0 turns it off.
   */
  idleFlushMs?: number;
  /**
   * The idle flush applies only while at most this many characters wait: an interactive
   * answer is small, whereas bulk output read in bursts (with gaps under load) keeps its
   * full batch. Default 1024.
   */
  idleFlushMaxChars?: number;
  /**
   * Output arriving within this many ms after `noteInput()` is sealed at once: a keystroke's
   * echo never waits for a batch. Once per keystroke, so a stream the operator types into
   * stays batched. Default 100.
   */
  echoWindowMs?: number;
  /** The run's very first output is sealed at once (a dashboard watching the run start waits for no batch). Default true. */
  firstAtOnce?: boolean;
  /** A frame is sealed as soon as this many characters wait (UTF-16 units, so 32 KiB of ASCII). Default 32 768. */
  maxFrameChars?: number;
  /**
   * Characters of output held (waiting or in frames not yet acknowledged by the hub; each
   * frame also counts 64 for its overhead) past which the batcher has no room: its source
   * stops reading (`hasRoom()`) and goes on when acks free room (`onRoom`). Output is never
   * dropped — it waits in the run's capture file. Default 4 Mi.
   */
  roomChars?: number;
  /** Whether the hub is reachable at first (see `setLive`). Default true. */
  live?: boolean;
  /** When the run started (epoch ms); frames carry `t` relative to it. Default: construction time. */
  startedAt?: number;
  now?: () => number;
  /** Seq of the last frame sealed before (a run re-adopted after a worker restart): numbering goes on after it. Default 0. */
  initialSeq?: number;
  /** Frames sealed before and maybe not yet acknowledged (seq ≤ initialSeq, oldest first): kept and sent like new ones. */
  initialFrames?: readonly Frame[];
  /** Receives each sealed frame, in seq order, with how many characters of pushed output it completes (all frames so far). */
  onFrame: (frame: Frame, pushedThrough: number) => void;
  /** An ack freed room after `hasRoom()` was false: the source may read again. */
  onRoom?: () => void;
}

const FRAME_OVERHEAD = 64;

interface Chunk {
  text: string;
  /** ms since the run started when the chunk arrived. */
  t: number;
}

/**
 * Turns a run's decoded output into numbered frames (`seq` from 1, +1 per frame) and
 * keeps each frame until the hub acknowledges it, so it can be sent again after a
 * reconnect. Pure: no I/O; time comes from `now` and timers.
 *
 * The hub only accepts a gapless seq sequence, and output is never dropped: memory stays
 * bounded because the source (the capture file's follower) reads only while the batcher
 * `hasRoom()`, and waits for `onRoom` — while the hub is slow or unreachable the rest of
 * the output waits on disk. Frames are numbered only while the hub is reachable.
 */
export class FrameBatcher {
  private readonly flushMs: number;
  private readonly idleFlushMs: number;
  private readonly idleFlushMaxChars: number;
  private readonly echoWindowMs: number;
  private readonly firstAtOnce: boolean;
  private readonly maxFrameChars: number;
  private readonly roomChars: number;
  private readonly startedAt: number;
  private readonly now: () => number;
  private readonly onFrame: FrameBatcherOptions['onFrame'];
  private readonly onRoom: FrameBatcherOptions['onRoom'];

  private live: boolean;
  private pending: Chunk[] = [];
  private pendingChars = 0;
  /** `hasRoom()` was false when last asked: the next ack that frees room says so. */
  private full = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** When the timer fires (ms, `now`): it is moved, never re-created, as output keeps coming. */
  private timerAt = 0;
  /** When the pending output's first and newest characters arrived (ms, `now`). */
  private firstPushAt = 0;
  private lastPushAt = 0;
  /** When a keystroke was typed whose echo has not come yet (null: none). */
  private inputAt: number | null = null;
  private seq = 0;
  private acked = 0;
  // A queue with a moving head: acks remove from the front, and Array#shift is O(n).
  private frames: Frame[] = [];
  private head = 0;
  private framesCost = 0;
  /** Characters of pushed output sealed into frames. */
  private sealedChars = 0;

  constructor(opts: FrameBatcherOptions) {
    this.flushMs = opts.flushMs;
    this.idleFlushMs = opts.idleFlushMs ?? 2;
    this.idleFlushMaxChars = opts.idleFlushMaxChars ?? 1024;
    this.echoWindowMs = opts.echoWindowMs ?? 100;
    this.firstAtOnce = opts.firstAtOnce ?? true;
    this.maxFrameChars = Math.max(2, opts.maxFrameChars ?? 32 * 1024);
    this.roomChars = opts.roomChars ?? 4 * 1024 * 1024;
    this.live = opts.live ?? true;
    this.now = opts.now ?? Date.now;
    this.startedAt = opts.startedAt ?? this.now();
    this.onFrame = opts.onFrame;
    this.onRoom = opts.onRoom;
    const initial = opts.initialFrames ?? [];
    this.seq = Math.max(opts.initialSeq ?? 0, initial[initial.length - 1]?.seq ?? 0);
    this.acked = initial.length > 0 ? initial[0]!.seq - 1 : this.seq;
    for (const frame of initial) {
      this.frames.push(frame);
      this.framesCost += frame.data.length + FRAME_OVERHEAD;
    }
  }

  /** Seq of the newest frame (0 before the first). */
  get lastSeq(): number {
    return this.seq;
  }

  /** Highest seq the hub acknowledged. */
  get ackedSeq(): number {
    return this.acked;
  }

  /** Frames not yet acknowledged, oldest first. */
  unacked(): readonly Frame[] {
    return this.frames.slice(this.head);
  }

  get hasUnacked(): boolean {
    return this.head < this.frames.length;
  }

  /** Whether output is waiting to become a frame. */
  get hasPending(): boolean {
    return this.pendingChars > 0;
  }

  /**
   * Whether more output may be pushed: what is held (waiting and unacknowledged) is under
   * `roomChars`. When not, `onRoom` is called once an ack frees room.
   */
  hasRoom(): boolean {
    if (this.held() < this.roomChars) return true;
    this.full = true;
    return false;
  }

  /** A keystroke was typed into the run's terminal: the output that follows is its echo. */
  noteInput(): void {
    this.inputAt = this.now();
  }

  push(text: string): void {
    if (text.length === 0) return;
    const now = this.now();
    if (!this.hasPending) this.firstPushAt = now;
    this.lastPushAt = now;
    const echo = this.inputAt !== null && now - this.inputAt <= this.echoWindowMs;
    this.inputAt = null;
    // A run's very first output goes at once too: a dashboard watching it start waits for no batch.
    const first = this.firstAtOnce && this.seq === 0;
    // Coalescing keeps the chunk count low during an outage; `t` only needs frame precision.
    const last = this.pending[this.pending.length - 1];
    if (last && last.text.length + text.length <= this.maxFrameChars) last.text += text;
    else this.pending.push({ text, t: this.elapsed() });
    this.pendingChars += text.length;
    if ((echo || first) && this.live) this.flush();
    else this.schedule();
  }

  /** Whether the hub is reachable. Going live seals what waited; while not live, output stays unnumbered. */
  setLive(live: boolean): void {
    this.live = live;
    if (live) this.flush();
    else this.clearTimer();
  }

  /** Seals what is pending now (e.g. when the run ended), unless the hub is not reachable. */
  flush(): void {
    this.clearTimer();
    if (!this.live || !this.hasPending) return;
    const chunks = this.pending;
    this.pending = [];
    this.pendingChars = 0;
    this.seal(chunks);
  }

  /** The hub persisted every frame up to `lastSeq`: forget them. */
  ack(lastSeq: number): void {
    while (this.head < this.frames.length && this.frames[this.head]!.seq <= lastSeq) {
      this.framesCost -= this.frames[this.head]!.data.length + FRAME_OVERHEAD;
      this.head += 1;
    }
    this.acked = Math.max(this.acked, Math.min(lastSeq, this.seq));
    if (this.head > 1024 && this.head * 2 > this.frames.length) {
      this.frames = this.frames.slice(this.head);
      this.head = 0;
    }
    if (this.full && this.held() < this.roomChars) {
      this.full = false;
      this.onRoom?.();
    }
  }

  /** Stops the flush timer; pending output is discarded. */
  dispose(): void {
    this.clearTimer();
  }

  /** Characters held: waiting output, and unacknowledged frames with their overhead. */
  private held(): number {
    return this.pendingChars + this.framesCost;
  }

  private schedule(): void {
    if (!this.hasPending || !this.live) return;
    if (this.pendingChars >= this.maxFrameChars) {
      this.flush();
      return;
    }
    const due = this.dueAt();
    // One timer per frame at most: a stream of chunks only moves its deadline, checked when it fires.
    if (this.timer && this.timerAt <= due) return;
    this.clearTimer();
    this.timerAt = due;
    this.timer = setTimeout(() => this.onTimer(), Math.max(0, due - this.now()));
  }

  /** When the pending output is due: `flushMs` after its first character, or `idleFlushMs` after its newest while it is small. */
  private dueAt(): number {
    const latest = this.firstPushAt + this.flushMs;
    const idle = this.idleFlushMs > 0 && this.pendingChars <= this.idleFlushMaxChars;
    return idle ? Math.min(latest, this.lastPushAt + this.idleFlushMs) : latest;
  }

  private onTimer(): void {
    this.timer = null;
    if (this.now() >= this.dueAt()) this.flush();
    else this.schedule();
  }

  /** Cuts into frames of at most maxFrameChars; a frame's `t` is when its first character arrived. */
  private seal(chunks: Chunk[]): void {
    let data = '';
    let t = 0;
    const emit = () => {
      if (data.length === 0) return;
      const frame = { seq: ++this.seq, t, data };
      data = '';
      this.frames.push(frame);
      this.framesCost += frame.data.length + FRAME_OVERHEAD;
      this.onFrame(frame, this.sealedChars);
    };
    for (const chunk of chunks) {
      let text = chunk.text;
      while (text.length > 0) {
        if (data.length === 0) t = chunk.t;
        const room = this.maxFrameChars - data.length;
        if (text.length <= room) {
          data += text;
          this.sealedChars += text.length;
          break;
        }
        // Never end a frame between the two halves of a surrogate pair.
        const cut = isHighSurrogate(text.charCodeAt(room - 1)) ? room - 1 : room;
        data += text.slice(0, cut);
        this.sealedChars += cut;
        text = text.slice(cut);
        emit();
      }
    }
    emit();
  }

  /** Milliseconds on the frames' clock since its origin: the `t` a frame sealed now would carry. */
  elapsed(): number {
    return Math.max(0, Math.round(this.now() - this.startedAt));
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}
