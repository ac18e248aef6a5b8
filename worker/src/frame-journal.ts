import { closeSync, createReadStream, openSync, writeSync } from 'node:fs';
import { truncate } from 'node:fs/promises';
import type { Frame } from '@handoff/shared';
import type { OutputPosition } from './output-follower.js';

/** One line of `frames.jsonl`: a sealed frame and where the output file stood right after it. */
export interface JournalEntry extends Frame, OutputPosition {}

export interface JournalTail {
  /** The newest frame journaled (null: none). */
  last: JournalEntry | null;
  /** The newest frames, oldest first, at most `keepChars` of data (what the hub may still lack). */
  frames: Frame[];
}

/**
 * A run's frame journal (`frames.jsonl` in the run directory): every frame is appended,
 * synchronously, before it is sent, so a worker that restarts can resend exactly the
 * frames the hub lacks (byte-identical to what viewers saw) and go on reading the
 * output file where the last frame ended.
 */
export class FrameJournal {
  /** The journal opened for appending on the first frame, kept until `close()`: one write per frame, no open and close. */
  private fd: number | null = null;

  constructor(readonly path: string) {}

  /**
   * Appends one frame. Synchronous on purpose: the frame must be on disk (page cache) before
   * it can reach the hub, or a crash in between could let the hub hold a frame the journal lacks.
   */
  append(frame: Frame, at: OutputPosition): void {
    const entry: JournalEntry = { seq: frame.seq, t: frame.t, data: frame.data, offset: at.offset, skip: at.skip };
    const line = Buffer.from(`${JSON.stringify(entry)}\n`, 'utf8');
    this.fd ??= openSync(this.path, 'a', 0o600);
    for (let at = 0; at < line.length; ) at += writeSync(this.fd, line, at);
  }

  /** Closes the file (the run ended or another process owns the journal now). Idempotent; a later `append` opens it again. */
  close(): void {
    if (this.fd === null) return;
    const fd = this.fd;
    this.fd = null;
    closeSync(fd);
  }

  /**
   * Reads the journal (a missing one is empty) keeping only its newest frames, and cuts
   * off a line torn by a crash mid-append (that frame was never sent) so appends go on cleanly.
   */
  static async readTail(path: string, keepChars: number): Promise<JournalTail> {
    let last: JournalEntry | null = null;
    const frames: Frame[] = [];
    let head = 0;
    let chars = 0;
    let validBytes = 0;
    let torn = false;
    let pending: Buffer[] = [];
    const take = (line: Buffer) => {
      if (torn) return;
      let entry: JournalEntry | null = null;
      try {
        entry = JSON.parse(line.toString('utf8')) as JournalEntry;
      } catch {
        entry = null;
      }
      if (!entry || typeof entry.seq !== 'number' || typeof entry.data !== 'string' || (last && entry.seq !== last.seq + 1)) {
        torn = true;
        return;
      }
      validBytes += line.length + 1;
      last = entry;
      frames.push({ seq: entry.seq, t: entry.t, data: entry.data });
      chars += entry.data.length;
      while (chars > keepChars && head < frames.length - 1) chars -= frames[head++]!.data.length;
      if (head > 1024 && head * 2 > frames.length) {
        frames.splice(0, head);
        head = 0;
      }
    };
    try {
      for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
        let from = 0;
        for (let nl = chunk.indexOf(0x0a); nl !== -1; nl = chunk.indexOf(0x0a, from)) {
          pending.push(chunk.subarray(from, nl));
          take(Buffer.concat(pending));
          pending = [];
          from = nl + 1;
        }
        if (from < chunk.length) pending.push(chunk.subarray(from));
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      return { last: null, frames: [] };
    }
    if (torn || pending.length > 0) await truncate(path, validBytes);
    return { last, frames: frames.slice(head) };
  }
}
