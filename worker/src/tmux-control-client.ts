import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { AppError } from '@handoff/shared';
import type { Logger } from './logger.js';

export interface TmuxControlClientOptions {
  /** Absolute path of the tmux binary. */
  tmuxBin: string;
  /** The run's private tmux server socket. */
  socket: string;
  /** The session the client attaches to (it must exist). */
  session: string;
  logger: Logger;
  /** How long `close()` waits for the client to exit before SIGKILL, in ms. Default 1000. */
  closeTimeoutMs?: number;
}

interface Pending {
  resolve: () => void;
  reject: (err: AppError) => void;
  /** What tmux said about the first command of this `run()` it refused (null: none refused). */
  error: string | null;
  /** Commands of this `run()` not answered yet. */
  left: number;
}

/**
 * One persistent tmux control-mode client (`tmux -C attach-session`) of a run's server:
 * commands are written to its stdin as lines and answered by `%begin … %end|%error`
 * blocks, so a keystroke costs a pipe write instead of a tmux process (~7 ms of spawn
 * under load). It attaches with `no-output` (the pane's output is read from the capture
 * file, never twice) and `ignore-size` (it never sizes a window).
 *
 * Started on the first `run()`, and again on the next one after it died (killed, or the
 * server gone): commands are never written to a dead client, so nothing is lost between
 * two clients, and since `run()` calls are answered in the order they were written,
 * nothing is reordered. A `run()` whose client dies before answering rejects
 * (UNAVAILABLE) and is never written again: tmux may or may not have executed it, and
 * typing it again could type it twice (at most once, never twice). `close()` ends it; it also exits on its own when the server goes or when its
 * stdin closes (the worker died).
 */
export class TmuxControlClient {
  private readonly opts: TmuxControlClientOptions;
  private readonly log: Logger;
  private child: ChildProcessByStdio<Writable, Readable, null> | null = null;
  /** One entry per `run()` in flight, oldest first; tmux answers commands in order. */
  private readonly pending: Pending[] = [];
  private partial = '';
  /** The lines of the `%begin … %end|%error` block answering one of our commands, while inside it. */
  private block: string[] | null = null;
  private closed = false;
  /** How many clients were started (tests check restarts with it). */
  private starts = 0;

  constructor(opts: TmuxControlClientOptions) {
    this.opts = opts;
    this.log = opts.logger;
  }

  /** The live client's process id, or null when none runs. */
  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  /** How many control clients this object started so far. */
  get started(): number {
    return this.starts;
  }

  /**
   * Runs tmux commands (each an argument list, e.g. `['send-keys', '-t', '%0', '-H', '0d']`)
   * in order; resolves once tmux answered all of them. Rejects with an AppError
   * (UNAVAILABLE) when tmux refused one (the others still ran) or the client died first.
   */
  run(commands: readonly (readonly string[])[]): Promise<void> {
    if (this.closed) return Promise.reject(new AppError({ code: 'UNAVAILABLE', message: 'the terminal input client is closed' }));
    if (commands.length === 0) return Promise.resolve();
    const child = this.child ?? this.start();
    // One command per line: tmux answers each line of a control client with one block,
    // whereas a `;`-list gets one block per command up to the first that fails.
    const lines = commands.map((args) => `${args.map(quoteArg).join(' ')}\n`).join('');
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ resolve, reject, error: null, left: commands.length });
      child.stdin.write(lines);
    });
  }

  /** Ends the client (idempotent); resolves once its process exited. */
  async close(): Promise<void> {
    this.closed = true;
    const child = this.child;
    if (!child) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.stdin.end(); // control mode exits at the end of its input
    const timer = setTimeout(() => child.kill('SIGKILL'), this.opts.closeTimeoutMs ?? 1000);
    await exited;
    clearTimeout(timer);
  }

  private start(): ChildProcessByStdio<Writable, Readable, null> {
    // A worker running inside tmux must not make this client look nested.
    const env = { ...process.env, TMUX: undefined, TMUX_PANE: undefined };
    const child = spawn(this.opts.tmuxBin, ['-S', this.opts.socket, '-C', 'attach-session', '-f', 'no-output,ignore-size', '-t', this.opts.session], {
      stdio: ['pipe', 'pipe', 'ignore'],
      env,
    });
    this.starts += 1;
    this.child = child;
    this.partial = '';
    this.block = null;
    child.stdout.setEncoding('utf8').on('data', (text: string) => this.onData(text));
    // EPIPE once it died: the exit handler fails what was waiting.
    child.stdin.on('error', () => undefined);
    child.once('error', (err) => this.log.warn({ err }, 'tmux control client failed'));
    child.once('exit', (code, signal) => {
      if (this.child === child) this.child = null;
      const waiting = this.pending.splice(0);
      if (waiting.length > 0 || !this.closed) this.log.info({ code, signal, waiting: waiting.length }, 'tmux control client exited');
      // The server reads a control client's input itself and answers each line before the
      // next: commands it never began answering were never executed — a client killed
      // between two keystrokes, or while the worker was writing — so a new client types them
      // (once). One it began answering may have run: failing it beats typing it twice.
      // Never written again: a dying client may have passed the keys to the server without
      // relaying its answer, so a resend could type them twice (seen under load). At most
      // once: the sender hears UNAVAILABLE and the next keys go through a new client.
      for (const p of waiting) {
        p.reject(new AppError({ code: 'UNAVAILABLE', message: 'the run’s terminal input client ended before tmux confirmed the keys; they may not have been typed' }));
      }
    });
    return child;
  }

  private onData(text: string): void {
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) this.onLine(line);
  }

  private onLine(line: string): void {
    // Blocks answering our own input carry flags 1; the attach command's block carries 0.
    const guard = /^%(begin|end|error) \d+ \d+ (\d+)$/.exec(line);
    if (!guard) {
      this.block?.push(line);
      return;
    }
    const [, kind, flags] = guard;
    if (flags !== '1') return;
    if (kind === 'begin') {
      this.block = [];
      return;
    }
    const body = this.block ?? [];
    this.block = null;
    const head = this.pending[0];
    if (!head) return;
    if (kind === 'error' && head.error === null) head.error = body.join(' ').trim();
    head.left -= 1;
    if (head.left > 0) return;
    this.pending.shift();
    if (head.error === null) head.resolve();
    else head.reject(new AppError({ code: 'UNAVAILABLE', message: `the run's terminal did not take the keys: ${head.error || 'tmux refused them'}` }));
  }
}

/** Quotes one argument for tmux's command parser: single quotes keep everything literal but `'` itself. */
function quoteArg(arg: string): string {
  if (/^[A-Za-z0-9_%.,:=+/-]+$/.test(arg)) return arg;
  return `'${arg.replaceAll("'", `'\\''`)}'`;
}
