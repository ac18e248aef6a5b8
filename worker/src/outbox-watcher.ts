import { watch, type FSWatcher } from 'node:fs';
import { open, readFile, writeFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { z } from 'zod';
import type { Logger } from './logger.js';

export interface OutboxWatcherOptions {
  /** `$HANDOFF_OUTBOX` of the run (JSON lines written by the agent SDK / CLI). */
  path: string;
  logger: Logger;
  /** The agent asked for a human (`{type: 'request-operator', reason}`). */
  onRequestOperator: (reason: string) => void;
  /** A line longer than this (bytes, without its newline) is skipped. Default 64 KiB. */
  maxLineBytes?: number;
  /**
   * Where the offset after the last complete line read is kept, so that a worker that
   * re-adopts the run goes on from there instead of reporting every request again.
   * Default: none (the file is read from its start).
   */
  statePath?: string;
}

/** Longest reason the hub takes (`run:needs-operator`). */
const MAX_REASON = 2000;

const requestSchema = z.object({ type: z.literal('request-operator'), reason: z.string() });
const lineSchema = z.object({ type: z.string() });

/**
 * Follows the run's outbox, where the agent writes requests for the worker: watches its
 * directory (inotify; no polling — watching the directory also survives the file being
 * replaced) and reads whatever was appended since the last read, line by line. A line
 * still being written waits for its newline. The file's existing content is read once at
 * `start()`, so nothing written before the watch began is missed.
 */
export class OutboxWatcher {
  private readonly opts: OutboxWatcherOptions;
  private readonly log: Logger;
  private readonly name: string;
  private watcher: FSWatcher | null = null;
  /** Bytes of the file consumed so far. */
  private offset = 0;
  /** The start of a line whose newline has not arrived yet. */
  private partial: Buffer = Buffer.alloc(0);
  /** Skipping the rest of an over-long line. */
  private skipping = false;
  private reading = false;
  private readAgain = false;
  private closed = false;
  /** Whether the saved offset (statePath) was read. */
  private loaded = false;

  constructor(opts: OutboxWatcherOptions) {
    this.opts = opts;
    this.log = opts.logger;
    this.name = basename(opts.path);
  }

  start(): void {
    if (this.watcher || this.closed) return;
    try {
      this.watcher = watch(dirname(this.opts.path), (_event, name) => {
        if (name === null || name === this.name) this.read();
      });
      this.watcher.on('error', (err) => this.log.warn({ err }, 'stopped watching the agent outbox'));
    } catch (err) {
      this.log.warn({ err }, 'cannot watch the agent outbox: agent requests will not reach the hub');
    }
    this.read();
  }

  close(): void {
    this.closed = true;
    this.watcher?.close();
    this.watcher = null;
  }

  /** Reads what was appended; a read asked for during one runs right after it. */
  private read(): void {
    if (this.closed) return;
    if (this.reading) {
      this.readAgain = true;
      return;
    }
    this.reading = true;
    void this.drain()
      .catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ err }, 'cannot read the agent outbox');
      })
      .finally(() => {
        this.reading = false;
        if (this.readAgain) {
          this.readAgain = false;
          this.read();
        }
      });
  }

  private async drain(): Promise<void> {
    if (!this.loaded) {
      this.loaded = true;
      const saved = this.opts.statePath ? Number.parseInt(await readFile(this.opts.statePath, 'utf8').catch(() => ''), 10) : Number.NaN;
      if (saved > 0) this.offset = saved;
    }
    const before = this.lineEnd;
    try {
      await this.readFile();
    } finally {
      if (this.opts.statePath && this.lineEnd !== before) {
        await writeFile(this.opts.statePath, `${this.lineEnd}\n`, { mode: 0o600 }).catch((err: unknown) => this.log.warn({ err }, 'cannot record the outbox offset'));
      }
    }
  }

  /** Offset after the last complete line read. */
  private get lineEnd(): number {
    return this.offset - this.partial.length;
  }

  private async readFile(): Promise<void> {
    const file = await open(this.opts.path, 'r');
    try {
      const { size } = await file.stat();
      if (size < this.offset) {
        // Truncated or replaced: start over from its beginning.
        this.offset = 0;
        this.partial = Buffer.alloc(0);
        this.skipping = false;
      }
      const chunk = Buffer.alloc(64 * 1024);
      for (;;) {
        const { bytesRead } = await file.read(chunk, 0, chunk.length, this.offset);
        if (bytesRead === 0 || this.closed) break;
        this.offset += bytesRead;
        this.consume(chunk.subarray(0, bytesRead));
      }
    } finally {
      await file.close();
    }
  }

  private consume(bytes: Buffer): void {
    const max = this.opts.maxLineBytes ?? 64 * 1024;
    let rest = bytes;
    for (let nl = rest.indexOf(0x0a); nl !== -1; nl = rest.indexOf(0x0a)) {
      const line = Buffer.concat([this.partial, rest.subarray(0, nl)]);
      rest = rest.subarray(nl + 1);
      this.partial = Buffer.alloc(0);
      if (this.skipping) this.skipping = false; // the end of a line already reported as too long
      else if (line.length > max) this.log.warn({ maxLineBytes: max }, 'skipping an over-long line in the agent outbox');
      else this.handle(line.toString('utf8'));
    }
    if (this.skipping) return;
    // Copied: `rest` is a view of the read buffer, which the next read overwrites.
    this.partial = Buffer.concat([this.partial, rest]);
    if (this.partial.length > max) {
      // Not kept until its newline comes: an agent cannot make the worker buffer without bound.
      this.log.warn({ maxLineBytes: max }, 'skipping an over-long line in the agent outbox');
      this.partial = Buffer.alloc(0);
      this.skipping = true;
    }
  }

  private handle(line: string): void {
    if (line.trim() === '') return;
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch {
      this.log.warn('skipping a line of the agent outbox that is not JSON');
      return;
    }
    const request = requestSchema.safeParse(json);
    if (request.success) {
      const reason = request.data.reason.trim().slice(0, MAX_REASON);
      if (reason === '') {
        this.log.warn('skipping an operator request without a reason');
        return;
      }
      this.log.info({ chars: reason.length }, 'agent asked for an operator'); // the reason is the agent's text: not logged
      this.opts.onRequestOperator(reason);
      return;
    }
    const typed = lineSchema.safeParse(json);
    this.log.warn({ type: typed.success ? typed.data.type : null }, 'skipping an agent outbox line of unknown type');
  }
}
