import { execFile, spawn } from 'node:child_process';
import { constants, open } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { Socket } from 'node:net';
import { delimiter, join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { AppError, type Command } from '@handoff/shared';
import type { CapturedContext } from './handoff-packet.js';
import type { Logger } from './logger.js';
import { OperatorShell, type Operator } from './operator-shell.js';
import { reapRun, signalRun, terminateRun } from './process-tree.js';
import { agentCliWrapper, RunFiles, shellQuote, wrapperScript } from './run-script.js';
import { StatusLine } from './status-line.js';
import { sendKeysInvocations } from './terminal-input.js';
import { findExecutable, tmux } from './tmux.js';

export interface TmuxRunOptions {
  runId: string;
  /** Parent of every run directory (WORKER_RUN_DIR); this run lives in `<runsDir>/<runId>/`. */
  runsDir: string;
  command: Command;
  /** Working directory; the run fails to start (exit code null) if it does not exist. */
  cwd: string | null;
  /**
   * The run process's complete environment; HANDOFF_RUN_ID, HANDOFF_INBOX, HANDOFF_OUTBOX
   * and HANDOFF_CONTROL are added, and `<run dir>/bin` (the `handoff-agent` CLI) goes first on PATH.
   */
  env: Record<string, string | undefined>;
  cols: number;
  rows: number;
  /** Absolute path of the tmux binary. */
  tmuxBin: string;
  /** Receives the pane's output decoded as UTF-8; a multibyte character is never split. */
  onOutput: (text: string) => void;
  logger: Logger;
  /** Cancel: ms between SIGTERM and SIGKILL of the run's processes. Default 2000. */
  killGraceMs?: number;
  /** Once the command ended, how long tmux may take to hand over the last output, in ms. Default 2000. */
  drainTimeoutMs?: number;
  /** Scrollback lines tmux keeps for the pane. Default 50 000. */
  historyLimit?: number;
  /** The Node that runs the `handoff-agent` CLI inside the run. Default: the worker's own (`process.execPath`). */
  nodeBin?: string;
  /** How long an operator message stays in the status line, in ms. Default 10 000. */
  messageFlashMs?: number;
  /** The bash of operator shells; null: `sh -i`. Default: `bash` on the run's PATH, else null. */
  operatorBash?: string | null;
}

export interface RunOutcome {
  /** Exit status; 128+N when killed by signal N; null when the process never started or was lost. */
  exitCode: number | null;
  /** Why there is no exit status. */
  error?: string;
  /** Whether `cancel()` ended the run. */
  cancelled: boolean;
}

const SESSION = 'run';
const openFile = promisify(open);
const execFileAsync = promisify(execFile);

/**
 * One run inside its own private tmux server (socket in the run directory, mode 0700).
 * Output is captured with `pipe-pane` into a FIFO before the command is allowed to
 * start; the end is detected by a `wait-for done` client, without polling. When the run
 * ends — by itself or by `cancel()` — no process of it remains, the last output has been
 * delivered to `onOutput`, the tmux server is gone and the run directory removed.
 */
export class TmuxRun {
  readonly runId: string;
  /** The run directory, removed when the run ends. */
  readonly dir: string;
  /** `$HANDOFF_INBOX` of the run: operator messages as JSON lines. */
  readonly inboxPath: string;
  /** `$HANDOFF_OUTBOX` of the run: the agent's requests (e.g. for an operator) as JSON lines. */
  readonly outboxPath: string;
  /** `$HANDOFF_CONTROL` of the run: the desired control state, written by `RunControl`. */
  readonly controlPath: string;
  /** The status line of the run's tmux session (pause banner, operator messages). */
  readonly status: StatusLine;
  /** Resolves once the run ended and everything was cleaned up; never rejects. */
  readonly result: Promise<RunOutcome>;

  private readonly opts: TmuxRunOptions;
  private readonly log: Logger;
  private readonly socketPath: string;
  private readonly decoder = new StringDecoder('utf8');
  private readonly fifo: string;
  /** The environment the run's command got (and an operator shell gets). */
  private runEnv: Record<string, string | undefined> = {};
  private capture: Socket | null = null;
  private captureClosed: Promise<void> = Promise.resolve();
  private commandEnded: Promise<void> = Promise.resolve();
  private panePid = 0;
  /** tmux pane id (`%N`) of the agent's pane. */
  private agentPane = '';
  /** The operator who took over (their shell is open, or reopens at their next keystroke); null: the agent's pane gets input. */
  private operator: Operator | null = null;
  private shell: OperatorShell | null = null;
  /** Operator shell changes and keystrokes, one at a time and in order. */
  private terminal: Promise<unknown> = Promise.resolve();
  private cancelRequested = false;
  private commandDone = false;
  private killedHard = false;
  private resolveResult!: (outcome: RunOutcome) => void;

  private constructor(opts: TmuxRunOptions, dir: string) {
    this.opts = opts;
    this.runId = opts.runId;
    this.dir = dir;
    this.inboxPath = join(dir, RunFiles.inbox);
    this.outboxPath = join(dir, RunFiles.outbox);
    this.controlPath = join(dir, RunFiles.control);
    this.socketPath = join(dir, RunFiles.socket);
    this.fifo = join(dir, RunFiles.fifo);
    this.log = opts.logger;
    this.status = new StatusLine({
      tmuxBin: opts.tmuxBin,
      socket: this.socketPath,
      session: SESSION,
      logger: opts.logger,
      flashMs: opts.messageFlashMs,
    });
    this.result = new Promise((resolve) => (this.resolveResult = resolve));
  }

  /** Creates the run directory and tmux server and starts the command. Rejects (leaving nothing behind) if tmux cannot start it. */
  static async start(opts: TmuxRunOptions): Promise<TmuxRun> {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(opts.runId)) throw new Error(`run id ${JSON.stringify(opts.runId)} is not a safe directory name`);
    const dir = join(opts.runsDir, opts.runId);
    await mkdir(opts.runsDir, { recursive: true, mode: 0o700 });
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { mode: 0o700 });
    await chmod(dir, 0o700); // mkdir's mode is filtered by the umask
    const run = new TmuxRun(opts, dir);
    try {
      await run.launch();
    } catch (err) {
      await run.cleanUp();
      throw err;
    }
    void run.supervise();
    return run;
  }

  /** The pane's process id (the wrapper shell; it leads the run's session). */
  get pid(): number {
    return this.panePid;
  }

  /** True once the run is being cancelled or its command ended: nothing may pause it any more. */
  get ending(): boolean {
    return this.cancelRequested || this.commandDone;
  }

  /** The environment the run's command got (HANDOFF_* and the run's PATH included). */
  get environment(): Record<string, string> {
    const env: Record<string, string> = {};
    for (const [name, value] of Object.entries(this.runEnv)) if (value !== undefined) env[name] = value;
    return env;
  }

  /** The open operator shell (null when none is open). */
  get operatorShell(): OperatorShell | null {
    return this.shell;
  }

  /**
   * Takeover: opens a shell for `operator` in a new, selected window of the run's session
   * (its output joins the run's), starting in the agent pane's directory with the run's
   * environment. From now on keystrokes go to it, and if the operator ends it (`exit`), the
   * next keystroke opens a new one: they never reach the paused agent. Keeps a shell that is
   * already open. Rejects if the run is ending or tmux cannot open it.
   */
  openOperatorShell(operator: Operator, agent: 'paused' | 'pausing'): Promise<void> {
    return this.onTerminal(async () => {
      this.operator = operator;
      await this.ensureShell(agent);
    });
  }

  /**
   * What a hand-back passes to the agent: the operator shell's context (see
   * `OperatorShell.capture`) — or, when no shell was ever opened here (this worker missed
   * the takeover), the agent pane's directory and the run's environment.
   */
  captureContext(): Promise<CapturedContext> {
    return this.onTerminal(async () => {
      if (this.shell) return this.shell.capture();
      const pane = await tmux(this.opts.tmuxBin, this.socketPath, ['display-message', '-p', '-t', this.agentPane, '#{pane_current_path}']);
      const cwd = pane.code === 0 ? pane.stdout.replace(/\n$/, '') : '';
      // No shell of the operator's here: nothing of the environment was changed by them.
      return { cwd: cwd === '' ? null : cwd, env: {} };
    });
  }

  /** Ends the takeover: closes the operator's window and everything started in it; the agent's window is shown again. */
  closeOperatorShell(): Promise<void> {
    return this.onTerminal(() => this.dropShell());
  }

  /**
   * Types `data` into the run's terminal — the operator's shell during a takeover, else the
   * agent's pane — byte for byte (see terminal-input.ts), in the order calls are made.
   * Resolves once tmux took the keys. Rejects with an AppError: NOT_FOUND once the run is
   * ending, UNAVAILABLE when tmux refused.
   */
  input(data: string): Promise<void> {
    return this.onTerminal(async () => {
      if (this.ending) throw new AppError({ code: 'NOT_FOUND', message: `run ${this.runId} is ending: its terminal takes no input` });
      let target = this.agentPane;
      if (this.operator) target = (await this.ensureShell('paused')).paneId;
      for (const args of sendKeysInvocations(target, data)) {
        const result = await tmux(this.opts.tmuxBin, this.socketPath, args);
        if (result.code !== 0) {
          throw new AppError({ code: 'UNAVAILABLE', message: `the run's terminal did not take the keys: ${result.stderr.trim() || `exit code ${result.code}`}` });
        }
      }
    });
  }

  /** The operator's open shell; opens a new one if there is none or the operator ended it. */
  private async ensureShell(agent: 'paused' | 'pausing'): Promise<OperatorShell> {
    const operator = this.operator;
    if (!operator) throw new Error('no takeover in progress');
    if (this.ending) throw new AppError({ code: 'NOT_FOUND', message: `run ${this.runId} is ending` });
    if (this.shell && (await this.shell.alive())) return this.shell;
    if (this.shell) {
      this.log.info({ paneId: this.shell.paneId }, 'the operator shell ended; opening a new one');
      await this.shell.close();
      this.shell = null;
    }
    const cwd = await tmux(this.opts.tmuxBin, this.socketPath, ['display-message', '-p', '-t', this.agentPane, '#{pane_current_path}']);
    this.shell = await OperatorShell.open({
      tmuxBin: this.opts.tmuxBin,
      socket: this.socketPath,
      session: SESSION,
      dir: this.dir,
      fifo: this.fifo,
      env: this.runEnv,
      startDir: cwd.code === 0 ? cwd.stdout.replace(/\n$/, '') || null : null,
      operator,
      agent,
      bashBin: this.opts.operatorBash === undefined ? findExecutable('bash', this.runEnv.PATH) : this.opts.operatorBash,
      logger: this.log.child({ module: 'operator-shell' }),
      killGraceMs: Math.min(this.opts.killGraceMs ?? 2000, 1000),
    });
    return this.shell;
  }

  private async dropShell(): Promise<void> {
    this.operator = null;
    const shell = this.shell;
    this.shell = null;
    if (!shell) return;
    await shell.close();
    await tmux(this.opts.tmuxBin, this.socketPath, ['select-window', '-t', this.agentPane]);
  }

  private onTerminal<T>(op: () => Promise<T>): Promise<T> {
    const next = this.terminal.then(op);
    this.terminal = next.catch(() => undefined);
    return next;
  }

  /**
   * Ends the run: SIGTERM to every process group of the run, SIGKILL after the grace,
   * then the tmux server goes. Resolves with the outcome (128+signal unless the command
   * reported another status). Idempotent.
   */
  async cancel(): Promise<RunOutcome> {
    if (this.cancelRequested) return this.result;
    this.cancelRequested = true;
    this.log.info('cancelling run');
    await terminateRun(this.panePid); // continues a paused run too, so it meets its SIGTERM now
    const ended = await Promise.race([
      this.commandEnded.then(() => true),
      sleep(this.opts.killGraceMs ?? 2000, false, { ref: false }),
    ]);
    if (!ended) {
      this.killedHard = true;
      this.log.warn('run ignored SIGTERM; sending SIGKILL');
      await signalRun(this.panePid, 'SIGKILL');
      await tmux(this.opts.tmuxBin, this.socketPath, ['kill-server']); // its `wait-for done` client exits with it
    }
    return this.result;
  }

  private async launch(): Promise<void> {
    const { opts, dir } = this;
    const fifo = this.fifo;
    const wrapper = join(dir, RunFiles.wrapper);
    await writeFile(wrapper, wrapperScript({ tmuxBin: opts.tmuxBin, dir, command: opts.command, cwd: opts.cwd }), { mode: 0o600 });
    await writeFile(this.inboxPath, '', { mode: 0o600 });
    await writeFile(this.outboxPath, '', { mode: 0o600 });
    const bin = join(dir, RunFiles.bin);
    await mkdir(bin, { mode: 0o700 });
    await writeFile(join(bin, 'handoff-agent'), agentCliWrapper(opts.nodeBin ?? process.execPath), { mode: 0o700 });
    await execFileAsync('mkfifo', ['-m', '600', fifo]);
    this.capture = await openCapture(fifo);
    this.capture.on('data', (chunk: Buffer) => this.emit(this.decoder.write(chunk)));
    this.capture.on('error', (err) => this.log.warn({ err }, 'output capture failed'));
    const capture = this.capture;
    this.captureClosed = new Promise((resolve) => capture.once('close', () => resolve()));

    const env: Record<string, string | undefined> = {
      ...opts.env,
      HANDOFF_RUN_ID: opts.runId,
      HANDOFF_INBOX: this.inboxPath,
      HANDOFF_OUTBOX: this.outboxPath,
      HANDOFF_CONTROL: this.controlPath,
      PATH: `${bin}${delimiter}${opts.env.PATH ?? '/usr/local/bin:/usr/bin:/bin'}`,
      TMUX: undefined, // a worker itself running inside tmux must not make the run's server look nested
      TMUX_PANE: undefined,
    };
    this.runEnv = env;
    const set = (name: string, value: string) => ['set-option', '-g', name, value, ';'];
    const started = await tmux(
      opts.tmuxBin,
      this.socketPath,
      [
        '-u',
        '-f',
        '/dev/null',
        // Options come before new-session so the pane is created with them.
        ...set('history-limit', String(opts.historyLimit ?? 50_000)),
        ...set('status', 'off'),
        ...set('remain-on-exit', 'off'),
        ...set('default-terminal', 'screen-256color'),
        ...['new-session', '-d', '-P', '-F', '#{pane_pid} #{pane_id}', '-s', SESSION, '-x', String(opts.cols), '-y', String(opts.rows)],
        ...['sh', wrapper, ';'],
        // A share's tmux client (tmate/upterm) attaches to this session: the window keeps
        // the run's size whatever that client's terminal is, so the recording and the
        // dashboards never see a resize. Set on the window: tmux 3.3a crashes when the
        // global option says manual before a session exists, or when a window is added.
        ...['set-option', '-w', '-t', SESSION, 'window-size', 'manual', ';'],
        ...['pipe-pane', '-t', SESSION, '-O', `exec cat > ${shellQuote(fifo)}`],
      ],
      { env },
    );
    const [pidText, paneId] = started.stdout.trim().split(' ');
    this.panePid = Number.parseInt(pidText ?? '', 10);
    this.agentPane = paneId ?? '';
    if (started.code !== 0 || !(this.panePid > 1) || !/^%\d+$/.test(this.agentPane)) {
      throw new Error(`tmux could not start the run: ${started.stderr.trim() || `exit code ${started.code}`}`);
    }

    // Waits without polling: tmux remembers a `done` signalled before anyone waits, and
    // the client exits on its own if the server dies (kill-server, crash).
    const waiter = spawn(opts.tmuxBin, ['-S', this.socketPath, 'wait-for', 'done'], { stdio: 'ignore', env });
    this.commandEnded = new Promise((resolve) => {
      waiter.once('close', () => resolve());
      waiter.once('error', (err) => {
        this.log.error({ err }, 'cannot wait for the run to end');
        resolve();
      });
    });

    const go = await tmux(opts.tmuxBin, this.socketPath, ['wait-for', '-S', 'go']);
    if (go.code !== 0) throw new Error(`tmux could not start the run: ${go.stderr.trim() || `exit code ${go.code}`}`);
    this.log.debug({ panePid: this.panePid, dir }, 'run started in tmux');
  }

  private async supervise(): Promise<void> {
    await this.commandEnded;
    this.commandDone = true;
    let outcome: RunOutcome;
    try {
      // Whatever the command left behind (background jobs) goes with it, and so does an
      // operator's shell: its pane's `cat` holds the capture FIFO open, and tmux only exits
      // (ending the capture) once no window is left.
      const [{ killed }] = await Promise.all([reapRun(this.panePid, this.opts.killGraceMs ?? 2000), this.closeOperatorShell()]);
      if (killed) this.killedHard = true;
      // With its pane gone, tmux reads the pane's last bytes and exits (exit-empty);
      // the FIFO's EOF then means every byte has arrived.
      const drained = await Promise.race([
        this.captureClosed.then(() => true),
        sleep(this.opts.drainTimeoutMs ?? 2000, false, { ref: false }),
      ]);
      if (!drained) this.log.warn('tmux did not finish handing over output in time');
      outcome = await this.readOutcome();
    } catch (err) {
      this.log.error({ err }, 'run supervision failed');
      outcome = { exitCode: null, error: `worker failed while ending the run: ${String(err)}`, cancelled: this.cancelRequested };
    }
    await this.cleanUp();
    this.log.info({ exitCode: outcome.exitCode, cancelled: outcome.cancelled, error: outcome.error }, 'run ended');
    this.resolveResult(outcome);
  }

  private async readOutcome(): Promise<RunOutcome> {
    const cancelled = this.cancelRequested;
    const status = await readFile(join(this.dir, RunFiles.exitCode), 'utf8').catch(() => null);
    if (status !== null && /^\d+\s*$/.test(status)) return { exitCode: Number.parseInt(status, 10), cancelled };
    const startError = await readFile(join(this.dir, RunFiles.startError), 'utf8').catch(() => null);
    if (startError !== null) return { exitCode: null, error: startError, cancelled };
    // Killed together with its wrapper, which then could not record the status.
    if (cancelled) return { exitCode: 128 + (this.killedHard ? 9 : 15), cancelled };
    return { exitCode: null, error: 'the run ended without reporting an exit status (its tmux server or wrapper was killed)', cancelled };
  }

  /** Leaves nothing behind: processes, tmux server, capture, directory. Safe to call twice. */
  private async cleanUp(): Promise<void> {
    this.status.dispose();
    this.operator = null;
    await this.shell?.close();
    if (this.panePid > 1) await reapRun(this.panePid, 0).catch(() => undefined);
    await tmux(this.opts.tmuxBin, this.socketPath, ['kill-server']);
    if (this.capture) {
      this.capture.destroy();
      this.capture = null;
      this.emit(this.decoder.end());
    }
    await rm(this.dir, { recursive: true, force: true });
  }

  private emit(text: string): void {
    if (text.length > 0) this.opts.onOutput(text);
  }
}

/**
 * Opens the read end of the capture FIFO without blocking (a blocking open would pin a
 * libuv thread until tmux connects) and reads it as a stream. Until its first writer
 * connects, Linux reports neither data nor EOF; EOF comes once that writer exits.
 */
async function openCapture(fifo: string): Promise<Socket> {
  const fd = await openFile(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  return new Socket({ fd, readable: true, writable: false });
}
