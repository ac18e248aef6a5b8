import type { Frame } from '@handoff/shared';

export interface FrameBatcherOptions {
  /** A frame is sealed this many ms after its first character arrived (FRAME_FLUSH_MS; 16). */
  flushMs: number;
  /** A frame is sealed as soon as this many characters wait (UTF-16 units, so 32 KiB of ASCII). Default 32 768. */
  maxFrameChars?: number;
  /**
   * Memory cap, in characters, of output not yet acknowledged by the hub (each frame also
   * counts 64 for its overhead). Default 8 Mi. Beyond it the oldest output not yet in a
   * frame is dropped and replaced by a notice.
   */
  maxUnackedChars?: number;
  /** Whether the hub is reachable at first (see `setLive`). Default true. */
  live?: boolean;
  /** When the run started (epoch ms); frames carry `t` relative to it. Default: construction time. */
  startedAt?: number;
  now?: () => number;
  /** Seq of the last frame sealed before (a run re-adopted after a worker restart): numbering goes on after it. Default 0. */
  initialSeq?: number;
  /** Frames sealed before and maybe not yet acknowledged (seq ≤ initialSeq, oldest first): kept and sent like new ones. */
  initialFrames?: readonly Frame[];
  /**
   * Receives each sealed frame, in seq order, with how many characters of pushed output it
   * completes (all frames so far, dropped output included, the drop notice excluded).
   */
  onFrame: (frame: Frame, pushedThrough: number) => void;
  /** Told, when the notice is written, how many characters of output were dropped. */
  onDrop?: (dropped: { chars: number }) => void;
}

const FRAME_OVERHEAD = 64;

interface Chunk {
  text: string;
  /** False for the drop notice: not pushed output. */
  pushed: boolean;
  /** ms since the run started when the chunk arrived. */
  t: number;
}

/**
 * Turns a run's decoded output into numbered frames (`seq` from 1, +1 per frame) and
 * keeps each frame until the hub acknowledges it, so it can be sent again after a
 * reconnect. Pure: no I/O; time comes from `now` and timers.
 *
 * The hub only accepts a gapless seq sequence, so a numbered frame is never dropped.
 * Memory stays bounded because frames are numbered only while the hub is reachable and
 * below the cap; otherwise output waits unnumbered, and that is where the oldest is
 * dropped (replaced by a notice in the terminal).
 */
export class FrameBatcher {
  private readonly flushMs: number;
  private readonly maxFrameChars: number;
  private readonly maxUnackedChars: number;
  private readonly startedAt: number;
  private readonly now: () => number;
  private readonly onFrame: FrameBatcherOptions['onFrame'];
  private readonly onDrop: FrameBatcherOptions['onDrop'];

  private live: boolean;
  private pending: Chunk[] = [];
  private pendingChars = 0;
  private droppedChars = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private seq = 0;
  private acked = 0;
  // A queue with a moving head: acks remove from the front, and Array#shift is O(n).
  private frames: Frame[] = [];
  private head = 0;
  private framesCost = 0;
  /** Characters of pushed output sealed into frames or dropped. */
  private sealedChars = 0;

  constructor(opts: FrameBatcherOptions) {
    this.flushMs = opts.flushMs;
    this.maxFrameChars = Math.max(2, opts.maxFrameChars ?? 32 * 1024);
    this.maxUnackedChars = opts.maxUnackedChars ?? 8 * 1024 * 1024;
    this.live = opts.live ?? true;
    this.now = opts.now ?? Date.now;
    this.startedAt = opts.startedAt ?? this.now();
    this.onFrame = opts.onFrame;
    this.onDrop = opts.onDrop;
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
    return this.pendingChars > 0 || this.droppedChars > 0;
  }

  push(text: string): void {
    if (text.length === 0) return;
    // Coalescing keeps the chunk count low during an outage; `t` only needs frame precision.
    const last = this.pending[this.pending.length - 1];
    if (last && last.text.length + text.length <= this.maxFrameChars) last.text += text;
    else this.pending.push({ text, t: this.elapsed(), pushed: true });
    this.pendingChars += text.length;
    this.dropOverflow();
    this.schedule();
  }

  /**
   * Whether the hub is reachable. Going live seals what waited; while not live, output
   * stays unnumbered so that the oldest can be dropped if the outage lasts.
   */
  setLive(live: boolean): void {
    this.live = live;
    if (live) this.flush();
    else this.clearTimer();
  }

  /** Seals what is pending now (e.g. when the run ended), unless not live or over the cap. */
  flush(): void {
    this.clearTimer();
    if (!this.canSeal() || !this.hasPending) return;
    const chunks = this.pending;
    if (this.droppedChars > 0) {
      const notice = `\r\n\x1b[0m[handoff: ${this.droppedChars} characters of output were dropped while the hub was unreachable]\r\n`;
      chunks.unshift({ text: notice, t: chunks[0]?.t ?? this.elapsed(), pushed: false });
      this.onDrop?.({ chars: this.droppedChars });
      // The dropped output came before everything pending: the notice's frame stands for it.
      this.sealedChars += this.droppedChars;
      this.droppedChars = 0;
    }
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
    this.schedule(); // output held back by the cap may go now
  }

  /** Stops the flush timer; pending output is discarded. */
  dispose(): void {
    this.clearTimer();
  }

  private canSeal(): boolean {
    return this.live && this.framesCost < this.maxUnackedChars;
  }

  private schedule(): void {
    if (!this.hasPending || !this.canSeal()) return;
    if (this.pendingChars >= this.maxFrameChars) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.flushMs);
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
          if (chunk.pushed) this.sealedChars += text.length;
          break;
        }
        // Never end a frame between the two halves of a surrogate pair.
        const cut = isHighSurrogate(text.charCodeAt(room - 1)) ? room - 1 : room;
        data += text.slice(0, cut);
        if (chunk.pushed) this.sealedChars += cut;
        text = text.slice(cut);
        emit();
      }
    }
    emit();
  }

  /** Keeps frames plus waiting output under the cap by dropping the oldest waiting output. */
  private dropOverflow(): void {
    let excess = this.pendingChars + this.framesCost - this.maxUnackedChars;
    while (excess > 0 && this.pending.length > 0) {
      const oldest = this.pending[0]!;
      if (oldest.text.length <= excess) {
        this.pending.shift();
        this.drop(oldest.text.length);
        excess -= oldest.text.length;
      } else {
        const cut = isLowSurrogate(oldest.text.charCodeAt(excess)) ? excess + 1 : excess;
        oldest.text = oldest.text.slice(cut);
        this.drop(cut);
        excess = 0;
      }
    }
  }

  private drop(chars: number): void {
    this.pendingChars -= chars;
    this.droppedChars += chars;
  }

  private elapsed(): number {
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

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff;
}
