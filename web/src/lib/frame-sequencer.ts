import type { Frame } from '@handoff/shared';

/** What the caller must do after feeding frames in. */
export interface SequencerStep {
  /** Frames to write to the terminal now, in seq order, each exactly once. */
  write: Frame[];
  /** A frame is missing before buffered ones: ask for `term:subscribe {afterSeq: lastSeq}`. */
  needsResync: boolean;
}

export interface FrameSequencerOptions {
  /** Resync answers that may fail to close a gap before the gap is skipped. Default 3. */
  maxFailedResyncs?: number;
  /** Frames held back behind a gap before the gap is skipped. Default 5000. */
  maxBuffered?: number;
}

/**
 * Orders a run's terminal frames (per-run `seq`, +1 each) into one gap-free,
 * duplicate-free stream. Pure: no I/O, no clock; the caller emits and throttles.
 *
 * Live frames that arrive before the first snapshot (the `term:subscribe` ack)
 * are held until it lands. A snapshot is the server's authority on its range, so
 * frames older than its first one that nobody holds are given up on; a gap
 * between live frames is first asked for again, then skipped if the server
 * repeatedly cannot fill it, so the stream can never stall for good.
 */
export class FrameSequencer {
  #lastSeq = 0;
  #synced = false;
  #failedResyncs = 0;
  readonly #pending = new Map<number, Frame>();
  readonly #maxFailedResyncs: number;
  readonly #maxBuffered: number;

  constructor(options: FrameSequencerOptions = {}) {
    this.#maxFailedResyncs = options.maxFailedResyncs ?? 3;
    this.#maxBuffered = options.maxBuffered ?? 5000;
  }

  /** Seq of the last frame handed out for writing (0 before any). */
  get lastSeq(): number {
    return this.#lastSeq;
  }

  /** Whether a snapshot has been applied since creation. */
  get synced(): boolean {
    return this.#synced;
  }

  /**
   * `afterSeq` for the next `term:subscribe`: absent before the first snapshot
   * (the server then sends its recent tail), else everything after lastSeq.
   */
  get afterSeq(): number | undefined {
    return this.#synced ? this.#lastSeq : undefined;
  }

  /** Frames pushed live (`term:frame`). */
  live(frames: readonly Frame[]): SequencerStep {
    this.#hold(frames);
    if (!this.#synced) return { write: [], needsResync: false };
    const write = this.#drain();
    if (this.#hasGap() && this.#pending.size > this.#maxBuffered) this.#skipGap(write);
    return { write, needsResync: this.#hasGap() };
  }

  /** Frames answered by `term:subscribe` (first subscribe, resync or resubscribe). */
  snapshot(frames: readonly Frame[]): SequencerStep {
    this.#synced = true;
    this.#hold(frames);
    const write = this.#drain();
    const first = minSeqAbove(frames, this.#lastSeq);
    if (first !== undefined && first > this.#lastSeq + 1) {
      // The server no longer holds what came before its answer.
      this.#lastSeq = first - 1;
      write.push(...this.#drain());
    }
    if (!this.#hasGap()) {
      this.#failedResyncs = 0;
    } else if (++this.#failedResyncs >= this.#maxFailedResyncs) {
      this.#skipGap(write);
    }
    return { write, needsResync: this.#hasGap() };
  }

  #hold(frames: readonly Frame[]): void {
    for (const frame of frames) {
      if (frame.seq > this.#lastSeq && !this.#pending.has(frame.seq)) this.#pending.set(frame.seq, frame);
    }
  }

  #drain(): Frame[] {
    const out: Frame[] = [];
    for (let next = this.#pending.get(this.#lastSeq + 1); next; next = this.#pending.get(this.#lastSeq + 1)) {
      this.#pending.delete(next.seq);
      this.#lastSeq = next.seq;
      out.push(next);
    }
    return out;
  }

  #hasGap(): boolean {
    return this.#pending.size > 0;
  }

  /** Gives up on the missing frames: continue from the oldest buffered one. */
  #skipGap(write: Frame[]): void {
    const oldest = Math.min(...this.#pending.keys());
    this.#lastSeq = oldest - 1;
    this.#failedResyncs = 0;
    write.push(...this.#drain());
  }
}

function minSeqAbove(frames: readonly Frame[], seq: number): number | undefined {
  let min: number | undefined;
  for (const frame of frames) if (frame.seq > seq && (min === undefined || frame.seq < min)) min = frame.seq;
  return min;
}
