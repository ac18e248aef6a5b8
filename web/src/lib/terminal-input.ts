import { ApiError, retryAfterMs } from './api.js';

/** Keystrokes typed within this window go out as one frame, in ms. */
export const COALESCE_MS = 10;
/** The hub's limit on one `term:input` frame, in UTF-16 code units (termInputSchema). */
export const MAX_FRAME_CHARS = 4096;
/** Input waiting to be sent beyond this (a huge paste into a slow link) is refused, in characters. */
export const MAX_PENDING_CHARS = 256 * 1024;
/** How often one frame is retried after RATE_LIMITED before the input is dropped. */
const MAX_RATE_LIMIT_RETRIES = 5;
/** Wait before a retry when the hub did not say how long, and the longest wait honoured, in ms. */
const DEFAULT_RETRY_MS = 500;
const MAX_RETRY_MS = 5000;

/**
 * Splits `text` into frames of at most `max` UTF-16 code units, in order, never cutting a
 * surrogate pair (an emoji) in two.
 */
export function splitFrames(text: string, max = MAX_FRAME_CHARS): string[] {
  const frames: string[] = [];
  let rest = text;
  while (rest.length > max) {
    let cut = max;
    const last = rest.charCodeAt(cut - 1);
    if (last >= 0xd800 && last <= 0xdbff) cut -= 1;
    frames.push(rest.slice(0, cut));
    rest = rest.slice(cut);
  }
  if (rest) frames.push(rest);
  return frames;
}

export interface TerminalInputOptions {
  /** Sends one frame (`term:input`); resolves once the hub acked it, rejects with ApiError. */
  send: (data: string) => Promise<void>;
  /** Whether this user may type right now (holds a live write grant); checked before every frame. */
  allowed: () => boolean;
  /** A frame was refused (FORBIDDEN, RATE_LIMITED, …) or input was dropped: shown as a toast. */
  onError: (error: ApiError) => void;
  /** Coalescing window, in ms. Default COALESCE_MS. */
  coalesceMs?: number;
  /** Largest frame, in UTF-16 code units. Default MAX_FRAME_CHARS. */
  maxFrameChars?: number;
  /** Most input held back while frames are in flight, in characters. Default MAX_PENDING_CHARS. */
  maxPendingChars?: number;
}

/**
 * Forwards a terminal's keystrokes to the hub: what is typed within `coalesceMs` goes out
 * as one frame, long input is split into frames of at most `maxFrameChars`, and one frame
 * is in flight at a time so the hub receives them in order (keys typed meanwhile join the
 * next frame). A refused frame drops everything queued behind it, so a half-sent command
 * line is never completed by later keys; RATE_LIMITED frames are retried after the wait the
 * hub asks for. Once `allowed()` turns false nothing more is sent.
 */
export class TerminalInput {
  readonly #options: Required<TerminalInputOptions>;
  #pending = '';
  #timer: ReturnType<typeof setTimeout> | undefined;
  #sending = false;
  #stopped = false;

  constructor(options: TerminalInputOptions) {
    this.#options = { coalesceMs: COALESCE_MS, maxFrameChars: MAX_FRAME_CHARS, maxPendingChars: MAX_PENDING_CHARS, ...options };
  }

  /** Queues keystrokes (xterm's `onData`); ignored unless allowed. */
  push(data: string): void {
    if (this.#stopped || !data || !this.#options.allowed()) return;
    if (this.#pending.length + data.length > this.#options.maxPendingChars) {
      this.#options.onError(new ApiError('LIMIT_REACHED', `input not sent: more than ${this.#options.maxPendingChars} characters are waiting for the hub`));
      return;
    }
    this.#pending += data;
    if (this.#timer === undefined && !this.#sending) this.#timer = setTimeout(() => void this.#flush(), this.#options.coalesceMs);
  }

  /** Forgets queued input (the grant ended); a frame already in flight still gets its ack. */
  clear(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#pending = '';
  }

  /** Clears and ignores everything from now on. */
  stop(): void {
    this.#stopped = true;
    this.clear();
  }

  async #flush(): Promise<void> {
    this.#timer = undefined;
    this.#sending = true;
    let retries = 0;
    try {
      while (this.#pending && !this.#stopped) {
        if (!this.#options.allowed()) {
          this.#pending = '';
          break;
        }
        const [frame = ''] = splitFrames(this.#pending, this.#options.maxFrameChars);
        this.#pending = this.#pending.slice(frame.length);
        try {
          await this.#options.send(frame);
          retries = 0;
        } catch (error) {
          const apiError = error instanceof ApiError ? error : new ApiError('INTERNAL', String(error));
          const wait = retryAfterMs(apiError) ?? (apiError.code === 'RATE_LIMITED' ? DEFAULT_RETRY_MS : null);
          this.#options.onError(apiError);
          if (wait === null || retries >= MAX_RATE_LIMIT_RETRIES) {
            this.#pending = '';
            break;
          }
          retries += 1;
          // Back in front of what was typed meanwhile: order is kept.
          this.#pending = frame + this.#pending;
          await new Promise((resolve) => setTimeout(resolve, Math.min(Math.max(wait, 1), MAX_RETRY_MS)));
        }
      }
    } finally {
      this.#sending = false;
    }
  }
}
