import { type CastFrame, delayMs, outputUpTo } from './replay.js';

declare global {
  interface Window {
    /** Test hook: the replay terminal's text, as `terminalText` reads it. */
    __handoffReplayText?: () => string;
  }
}

/** Where the player writes: an xterm Terminal fits (write with a callback once parsed, reset). */
export interface ReplaySink {
  write(data: string, done?: () => void): void;
  reset(): void;
}

/**
 * Plays a recording's frames into a terminal: play/pause, speed, and seek to a frame seq.
 * `position` is the seq of the last frame written (0 = nothing yet); `settled` turns true
 * once xterm has parsed everything written, so what the terminal shows is frame `position`.
 */
export class ReplayPlayer {
  position = $state(0);
  playing = $state(false);
  speed = $state(1);
  settled = $state(true);

  readonly frames: CastFrame[];
  #sink: ReplaySink;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Bumped on every seek: a write callback of an earlier seek no longer settles anything. */
  #generation = 0;

  constructor(frames: CastFrame[], sink: ReplaySink) {
    this.frames = frames;
    this.#sink = sink;
  }

  get length(): number {
    return this.frames.length;
  }

  get ended(): boolean {
    return this.position >= this.frames.length;
  }

  play(): void {
    if (this.playing) return;
    if (this.ended) this.seek(0);
    this.playing = true;
    this.#schedule();
  }

  pause(): void {
    this.playing = false;
    clearTimeout(this.#timer);
  }

  toggle(): void {
    if (this.playing) this.pause();
    else this.play();
  }

  setSpeed(speed: number): void {
    this.speed = speed;
    if (this.playing) {
      clearTimeout(this.#timer);
      this.#schedule();
    }
  }

  /** Shows frame `seq` exactly: the terminal is reset and frames 1..seq written at once. */
  seek(seq: number): void {
    const target = Math.max(0, Math.min(this.frames.length, Math.floor(seq)));
    clearTimeout(this.#timer);
    const generation = ++this.#generation;
    this.settled = false;
    this.#sink.reset();
    this.position = target;
    this.#sink.write(outputUpTo(this.frames, target), () => {
      if (generation === this.#generation) this.settled = true;
    });
    if (this.playing) this.#schedule();
  }

  dispose(): void {
    this.pause();
    this.#generation += 1;
  }

  #schedule(): void {
    if (this.ended) {
      this.playing = false;
      return;
    }
    this.#timer = setTimeout(() => this.#step(), delayMs(this.frames, this.position, this.speed));
  }

  #step(): void {
    const frame = this.frames[this.position];
    if (!frame || !this.playing) return;
    const generation = this.#generation;
    this.settled = false;
    this.position = frame.seq;
    this.#sink.write(frame.data, () => {
      if (generation === this.#generation && this.position === frame.seq) this.settled = true;
    });
    this.#schedule();
  }
}
