import { readSync, watch, type FSWatcher } from 'node:fs';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { Logger } from './logger.js';

/**
 * A place in a run's output file that frames can be resumed from: decode the file from
 * byte `offset` (always a character boundary) and drop the first `skip` UTF-16 units.
 * `skip` is 0 unless a frame ended inside one read of the file.
 */
export interface OutputPosition {
  offset: number;
  skip: number;
}

export interface OutputFollowerOptions {
  /** The append-only capture file (`output.log`). */
  path: string;
  /** Where each capture pipe appends `o` when it starts and `c` once its `cat` ended (see `capturePipeCommand`). */
  pipesPath: string;
  /** Where to start; default: the beginning. */
  from?: OutputPosition;
  /** Receives the decoded output, never splitting a character, in order. */
  onText: (text: string) => void;
  /**
   * Whether the receiver takes more output now. When it answers false, reading stops (the
   * rest waits in the file, which is the run's buffer) until `resume()`. Default: always.
   */
  canRead?: () => boolean;
  logger: Logger;
  /** Bytes per read. Default 64 KiB. */
  readBytes?: number;
  /** Clock for `finish()`'s deadline. Default `Date.now`. */
  now?: () => number;
}

/** Bytes read in one go before the event loop gets a turn (see `drain`). */
const SLICE_BYTES = 1024 * 1024;

/**
 * Follows a run's capture file (written by tmux `pipe-pane` through `cat >>`, so the
 * output never depends on the worker being alive to read it): inotify on the run
 * directory wakes a read from the last offset, so a keystroke's echo arrives at once.
 * Decodes UTF-8 itself, cutting only before a character's first byte, so that decoding
 * is the same whatever the reads were — which makes `positionAt` exact for resuming.
 * Reads only while the receiver has room (`canRead`): a burst larger than the worker's
 * memory bound, or output during a long hub outage, waits in the file, never dropped.
 */
export class OutputFollower {
  private readonly opts: OutputFollowerOptions;
  private readonly log: Logger;
  private readonly names: Set<string>;
  private file: FileHandle | null = null;
  private watcher: FSWatcher | null = null;
  /** Next byte of the file to read. */
  private fileOffset: number;
  /** Bytes read but not decoded yet: the start of a character whose last bytes have not arrived. */
  private tail: Buffer = Buffer.alloc(0);
  /** UTF-16 units still to drop after a resume. */
  private skipLeft: number;
  /** UTF-16 units emitted so far. */
  private emitted = 0;
  /**
   * Where emitted text came from, oldest first: position `chars` (in emitted units) is
   * `{offset, skip}`; positions between two checkpoints count on from the earlier one.
   */
  private checkpoints: Array<{ chars: number; offset: number; skip: number }>;
  private reading = false;
  private readBuf: Buffer | null = null;
  private soon: NodeJS.Immediate | null = null;
  private readAgain = false;
  private closed = false;
  private wake: (() => void) | null = null;
  /** Reading stopped because the receiver had no room (see `resume`). */
  private held = false;
  /** The capture ended (`finish`): at the end of the file the output is complete. */
  private final = false;
  private markDelivered!: () => void;
  /** Resolves once the complete output was emitted after `finish()`, or on `close()`. */
  readonly delivered: Promise<void> = new Promise((resolve) => (this.markDelivered = resolve));

  constructor(opts: OutputFollowerOptions) {
    this.opts = opts;
    this.log = opts.logger;
    this.names = new Set([basename(opts.path), basename(opts.pipesPath)]);
    const from = opts.from ?? { offset: 0, skip: 0 };
    this.fileOffset = from.offset;
    this.skipLeft = from.skip;
    this.checkpoints = [{ chars: 0, offset: from.offset, skip: from.skip }];
  }

  /** Opens the file (it must exist), starts watching, and reads what is already there. */
  async start(): Promise<void> {
    this.file = await open(this.opts.path, 'r');
    this.watcher = watch(dirname(this.opts.path), (_event, name) => {
      if (name === null || this.names.has(name)) this.read();
    });
    this.watcher.on('error', (err) => this.log.warn({ err }, 'stopped watching the output capture'));
    this.read();
  }

  /** The receiver has room again: reading goes on where it stopped. */
  resume(): void {
    if (!this.held) return;
    this.held = false;
    this.read();
  }

  /** Bytes of the file consumed into emitted text. */
  get consumedOffset(): number {
    return this.fileOffset - this.tail.length;
  }

  /** Where the output stands after `chars` emitted units (0 ≤ chars ≤ what was emitted). */
  positionAt(chars: number): OutputPosition {
    let i = this.checkpoints.length - 1;
    while (i > 0 && this.checkpoints[i]!.chars > chars) i -= 1;
    const cp = this.checkpoints[i]!;
    return { offset: cp.offset, skip: cp.skip + (chars - cp.chars) };
  }

  /** Positions before `chars` will not be asked for again. */
  release(chars: number): void {
    let keep = 0;
    while (keep + 1 < this.checkpoints.length && this.checkpoints[keep + 1]!.chars <= chars) keep += 1;
    if (keep > 0) this.checkpoints.splice(0, keep);
  }

  /**
   * The capture ended once every pipe that started also ended: waits for that (at most
   * `timeoutMs`) and resolves true — or false when it did not happen in time. From then on
   * the end of the file is the end of the output: once read (as the receiver's room allows)
   * an incomplete last character is emitted as U+FFFD and `delivered` resolves.
   */
  async finish(timeoutMs: number): Promise<boolean> {
    const now = this.opts.now ?? Date.now;
    const deadline = now() + timeoutMs;
    let ended = false;
    for (;;) {
      ended = await this.pipesEnded();
      this.readNow();
      if (ended || this.closed || now() >= deadline) break;
      // Woken by the directory watch (the `c` line or more output); the timer only bounds the wait.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(250, Math.max(1, deadline - now())));
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
    this.final = true;
    this.readNow();
    return ended;
  }

  close(): void {
    this.closed = true;
    if (this.soon) clearImmediate(this.soon);
    this.soon = null;
    this.markDelivered();
    this.watcher?.close();
    this.watcher = null;
    const file = this.file;
    this.file = null;
    void file?.close().catch(() => undefined);
  }

  private async pipesEnded(): Promise<boolean> {
    const text = await readFile(this.opts.pipesPath, 'utf8').catch(() => '');
    const opened = text.split('o').length - 1;
    return opened > 0 && opened === text.split('c').length - 1;
  }

  private read(): void {
    this.wake?.();
    this.readNow();
  }

  /**
   * Reads to the end of the file, synchronously; a read asked for meanwhile (by what the
   * text's receiver does) runs right after, never inside another.
   */
  private readNow(): void {
    if (this.reading) {
      this.readAgain = true;
      return;
    }
    this.reading = true;
    try {
      do {
        this.readAgain = false;
        try {
          this.drain();
        } catch (err) {
          if (!this.closed) this.log.warn({ err }, 'cannot read the output capture');
        }
      } while (this.readAgain && !this.closed);
    } finally {
      this.reading = false;
    }
  }

  private drain(): void {
    const size = this.opts.readBytes ?? 64 * 1024;
    // One buffer for every read: what is read is copied out (decoded, or the tail) before the next.
    this.readBuf ??= Buffer.allocUnsafe(size);
    const buf = this.readBuf;
    let budget = SLICE_BYTES;
    for (;;) {
      if (budget <= 0) {
        // A backlog (a re-adopted run, output that waited for room) is read in slices: the
        // event loop runs between them, so a control push or an ack is never held back long.
        this.readSoon();
        return;
      }
      const file = this.file;
      if (!file) return;
      if (this.opts.canRead && !this.opts.canRead()) {
        this.held = true;
        return;
      }
      // Synchronous: the capture was just written, so it is read from the page cache in
      // microseconds, where a read through the thread pool costs more than the copy.
      const bytesRead = readSync(file.fd, buf, 0, size, this.fileOffset);
      if (bytesRead === 0) {
        if (this.final) this.endOfOutput();
        return;
      }
      this.fileOffset += bytesRead;
      budget -= bytesRead;
      const bytes = this.tail.length > 0 ? Buffer.concat([this.tail, buf.subarray(0, bytesRead)]) : buf.subarray(0, bytesRead);
      const complete = completeUtf8Length(bytes);
      this.tail = Buffer.from(bytes.subarray(complete));
      if (complete > 0) this.emit(bytes.subarray(0, complete).toString('utf8'), this.fileOffset - this.tail.length);
      // A short read of a regular file is its end: an append after it wakes the watch, which
      // reads again — no empty read to confirm it (one syscall per wake, not two). Once the
      // capture has ended (`final`), the empty read is what says the output is complete.
      if (bytesRead < size && !this.final) return;
    }
  }

  /** Reads on after the event loop had a turn (once, however often asked meanwhile). */
  private readSoon(): void {
    if (this.soon) return;
    this.soon = setImmediate(() => {
      this.soon = null;
      if (!this.closed) this.readNow();
    });
  }

  /** The whole capture was read: what is left of a character that never completed goes as U+FFFD. */
  private endOfOutput(): void {
    if (this.tail.length > 0) {
      const text = this.tail.toString('utf8');
      this.tail = Buffer.alloc(0);
      this.emit(text, this.fileOffset);
    }
    this.markDelivered();
  }

  /** Emits text decoded from the file up to byte `end` (from where the previous text ended). */
  private emit(decoded: string, end: number): void {
    if (this.closed) return; // detached: what follows belongs to whoever adopts the run
    let text = decoded;
    if (this.skipLeft > 0) {
      const drop = Math.min(this.skipLeft, text.length);
      this.skipLeft -= drop;
      text = text.slice(drop);
    }
    if (text.length === 0) return;
    this.emitted += text.length;
    // The next text starts at `end`: a character boundary, nothing to skip.
    this.checkpoints.push({ chars: this.emitted, offset: end, skip: 0 });
    this.opts.onText(text);
  }
}

/**
 * How many leading bytes of `buf` to decode now: all but a trailing, still-valid start
 * of a multibyte character. Cutting there never changes how the bytes decode (the
 * decoder is between characters), so reads of any size give the same text.
 */
export function completeUtf8Length(buf: Uint8Array): number {
  const n = buf.length;
  for (let back = 1; back <= Math.min(3, n); back += 1) {
    const i = n - back;
    const b = buf[i]!;
    if (b < 0x80) return n; // ASCII: everything before and including it is complete
    if (b < 0xc0) continue; // a continuation byte: look further back for its lead
    const need = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (need === 0 || back >= need) return n; // an invalid lead, or a sequence that is already whole (or overlong: invalid anyway)
    // Incomplete: keep it only while every byte so far can still form a character.
    const [lo, hi] = secondByteRange(b);
    for (let j = i + 1; j < n; j += 1) {
      const c = buf[j]!;
      const ok = j === i + 1 ? c >= lo && c <= hi : c >= 0x80 && c <= 0xbf;
      if (!ok) return n;
    }
    return i;
  }
  return n;
}

/** Allowed second byte after a lead (UTF-8, RFC 3629: no overlongs, surrogates or > U+10FFFF). */
function secondByteRange(lead: number): [number, number] {
  if (lead === 0xe0) return [0xa0, 0xbf];
  if (lead === 0xed) return [0x80, 0x9f];
  if (lead === 0xf0) return [0x90, 0xbf];
  if (lead === 0xf4) return [0x80, 0x8f];
  return [0x80, 0xbf];
}

/**
 * The `pipe-pane` command of a run's capture: appends the pane's raw output to the capture
 * file with `cat` (a dead worker loses nothing: no reader is needed), and records in the
 * pipes file that it started and, once `cat` met EOF (tmux closed the pane), that it ended.
 */
export function capturePipeCommand(outputPath: string, pipesPath: string, quote: (word: string) => string): string {
  const pipes = quote(pipesPath);
  return `echo o >> ${pipes}; cat >> ${quote(outputPath)}; echo c >> ${pipes}`;
}
