import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AppError, type Command, type Frame, type PaneInfo } from '@handoff/shared';
import { FrameJournal } from './frame-journal.js';
import type { CapturedContext } from './handoff-packet.js';
import type { Logger } from './logger.js';
import { OperatorShell, operatorShellProcesses, type Operator } from './operator-shell.js';
import { capturePipeCommand, OutputFollower, type OutputPosition } from './output-follower.js';
import { isHalted, processesWithEnv, procfs, reapProcesses, reapRun, runProcesses, signalRun, terminateRun, type ProcInfo } from './process-tree.js';
import { agentCliWrapper, RunFiles, shellQuote, wrapperScript } from './run-script.js';
import { ensureWatchdog, stopWatchdog } from './run-watchdog.js';
import { StatusLine } from './status-line.js';
import { sendKeysCommands } from './terminal-input.js';
import { TmuxControlClient } from './tmux-control-client.js';
import { findExecutable, tmux, tmuxStartDir } from './tmux.js';

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
  /**
   * Whether `onOutput` takes more now; when it answers false, the output waits in the
   * capture file until `resumeOutput()`. Default: always.
   */
  outputRoom?: () => boolean;
  /**
   * Called with the run as soon as it exists, before any of its output is read: the frames
   * sealed from its output are journaled through it (`recordFrame`) from the first one.
   */
  onCreated?: (run: TmuxRun) => void;
  /**
   * Called once the run's tmux server is up with its output captured, just before the
   * command is let go, with the pane as tmux created it: the start can be reported now, so
   * that the hub's handling of the report overlaps the command's own start. `start` may
   * still reject after it (the command could not be let go).
   */
  onLaunched?: (pane: PaneInfo | null) => void;
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
  /** When the run started (epoch ms), recorded for a worker that re-adopts it (frames' `t` count from it). Default: now. */
  startedAt?: number;
  /** Start the dead-man switch (see run-watchdog.ts). Default true. */
  watchdog?: boolean;
  /**
   * The perl that puts the command in a process group of its own (see `groupLauncher()`), so a
   * hard pause stops it with one signal; null: the command shares the wrapper's group and a
   * pause scans /proc. Default: `perl` in /usr/local/bin, /usr/bin or /bin.
   */
  perlBin?: string | null;
  /**
   * Keep the run directory (output file, journal, exit status) once the run ended, until
   * `release()`: a worker that dies before the hub took the exit report re-adopts the
   * ended run after its restart and reports the rest. Default false (removed at the end).
   */
  retainDir?: boolean;
}

/** What `TmuxRun.adopt` needs: the start options that still matter for a run already running. */
export type AdoptOptions = Omit<TmuxRunOptions, 'command' | 'cwd' | 'env' | 'cols' | 'rows' | 'startedAt' | 'onLaunched'> & {
  /** Where the journal says the output stood after the last frame sent (see `TmuxRun.journalTail`). Default: the start. */
  from?: OutputPosition;
};

/** `run.json` in the run directory. */
interface RunMeta {
  startedAt: number;
  panePid: number;
  paneId: string;
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

/** How a run directory looks to a worker starting up (see `TmuxRun.inspect`). */
export type RunDirState =
  /** Its tmux server runs: it can be re-adopted. */
  | 'live'
  /** It ended while no worker watched (exit status recorded, not abandoned): re-adopt to deliver the rest and the exit. */
  | 'ended'
  /** Nothing to adopt: never fully started, abandoned by its watchdog, or its tmux server died without a status. */
  | 'dead';

/**
 * One run inside its own private tmux server (socket in the run directory, mode 0700).
 * Output is captured with `pipe-pane` into an append-only file (`output.log`) before the
 * command is allowed to start, so it never depends on the worker being alive to read it;
 * the worker follows that file. The end is detected by a `wait-for done` client, without
 * polling. When the run ends — by itself or by `cancel()` — no process of it remains,
 * the last output has been delivered to `onOutput`, the tmux server is gone and the run
 * directory removed. While it runs, a watchdog stops it if the worker's lease goes stale,
 * and a worker that restarted can re-adopt it (`adopt`), resuming from its frame journal.
 */
export class TmuxRun {
  readonly runId: string;
  /** The run directory, removed when the run ends (or by `release()`, see `retainDir`). */
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

  private readonly opts: TmuxRunOptions | AdoptOptions;
  private readonly log: Logger;
  private readonly socketPath: string;
  /** The `pipe-pane` command of every pane of the run. */
  private readonly capture: string;
  private readonly follower: OutputFollower;
  private readonly journal: FrameJournal;
  /** The run's persistent control-mode client, started at first use: keystrokes and the status line. */
  private readonly tmuxControl: TmuxControlClient;
  /** The environment the run's command got (and an operator shell gets). */
  private runEnv: Record<string, string | undefined> = {};
  private commandEnded: Promise<void> = Promise.resolve();
  /** Set once the run directory is being removed: nothing is journaled any more. */
  private removed = false;
  /** Re-adopted after its tmux server was gone: only the markers find what is left of it. */
  private serverGone = false;
  private waiter: ChildProcess | null = null;
  private detached = false;
  private panePid = 0;
  /** The command's process group, once read and checked (see `commandGroup`). */
  private group: number | null = null;
  /** tmux pane id (`%N`) of the agent's pane. */
  private agentPane = '';
  /** The pane's size as tmux created it (null for an adopted run). */
  private paneSize: { cols: number; rows: number } | null = null;
  /** The operator who took over (their shell is open, or reopens at their next keystroke); null: the agent's pane gets input. */
  private operator: Operator | null = null;
  private shell: OperatorShell | null = null;
  /** Operator shell changes and keystrokes, one at a time and in order. */
  private terminal: Promise<unknown> = Promise.resolve();
  private cancelRequested = false;
  private commandDone = false;
  private killedHard = false;
  private resolveResult!: (outcome: RunOutcome) => void;

  private constructor(opts: TmuxRunOptions | AdoptOptions, dir: string, from?: OutputPosition) {
    this.opts = opts;
    this.runId = opts.runId;
    this.dir = dir;
    this.inboxPath = join(dir, RunFiles.inbox);
    this.outboxPath = join(dir, RunFiles.outbox);
    this.controlPath = join(dir, RunFiles.control);
    this.socketPath = join(dir, RunFiles.socket);
    this.capture = capturePipeCommand(join(dir, RunFiles.output), join(dir, RunFiles.outputPipes), shellQuote);
    this.journal = new FrameJournal(join(dir, RunFiles.journal));
    this.follower = new OutputFollower({
      path: join(dir, RunFiles.output),
      pipesPath: join(dir, RunFiles.outputPipes),
      from,
      onText: (text) => opts.onOutput(text),
      canRead: opts.outputRoom,
      logger: opts.logger,
    });
    this.log = opts.logger;
    this.tmuxControl = new TmuxControlClient({ tmuxBin: opts.tmuxBin, socket: this.socketPath, session: SESSION, logger: opts.logger.child({ module: 'tmux-control' }) });
    this.status = new StatusLine({ tmux: this.tmuxControl, session: SESSION, logger: opts.logger, flashMs: opts.messageFlashMs });
    this.result = new Promise((resolve) => (this.resolveResult = resolve));
  }

  /** Creates the run directory and tmux server and starts the command. Rejects (leaving nothing behind) if tmux cannot start it. */
  static async start(opts: TmuxRunOptions): Promise<TmuxRun> {
    const dir = runDir(opts.runsDir, opts.runId);
    await mkdir(opts.runsDir, { recursive: true, mode: 0o700 });
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { mode: 0o700 });
    await chmod(dir, 0o700); // mkdir's mode is filtered by the umask
    const run = new TmuxRun(opts, dir);
    opts.onCreated?.(run);
    return TmuxRun.supervised(run, () => run.launch());
  }

  /** Runs `step` (launch or re-attach), leaving nothing behind if it fails, then supervises the run. */
  private static async supervised(run: TmuxRun, step: () => Promise<void>): Promise<TmuxRun> {
    try {
      await step();
    } catch (err) {
      await run.cleanUp();
      run.follower.close();
      await run.release();
      throw err;
    }
    void run.supervise();
    return run;
  }

  /**
   * What a worker starting up finds in `<runsDir>/<runId>` (see `RunDirState`). Looks only:
   * nothing is stopped before the hub's verdict.
   */
  static async inspect(runsDir: string, runId: string, tmuxBin: string): Promise<RunDirState> {
    const dir = runDir(runsDir, runId);
    if (existsSync(join(dir, RunFiles.abandoned)) || !existsSync(join(dir, RunFiles.meta))) return 'dead';
    if ((await tmux(tmuxBin, join(dir, RunFiles.socket), ['list-panes', '-s', '-t', SESSION])).code === 0) return 'live';
    return existsSync(join(dir, RunFiles.exitCode)) || existsSync(join(dir, RunFiles.startError)) ? 'ended' : 'dead';
  }

  /**
   * The frames a re-adopting worker may have to resend (the newest, at most `keepChars`
   * of data) and the last one journaled, whose position `adopt` resumes from.
   */
  static journalTail(runsDir: string, runId: string, keepChars: number) {
    return FrameJournal.readTail(join(runDir(runsDir, runId), RunFiles.journal), keepChars);
  }

  /** When the run started (epoch ms), as recorded at its start; null if unknown. */
  static async startedAt(runsDir: string, runId: string): Promise<number | null> {
    return (await readMeta(runDir(runsDir, runId)))?.startedAt ?? null;
  }

  /**
   * Re-adopts a run a previous worker process started (it died or restarted): reattaches
   * to its tmux server and agent pane, waits for its end anew, follows its output file from
   * `from` (the position after the last frame journaled), keeps its watchdog (or starts a
   * new one). An operator shell left open is closed, with what was started from it: the
   * hub re-sends the desired control state, which reopens one if the takeover still holds.
   * A run that ended meanwhile delivers the rest of its output and its exit status.
   * Rejects if the directory holds no run that can be adopted (`inspect` says `dead`).
   */
  static async adopt(opts: AdoptOptions): Promise<TmuxRun> {
    const dir = runDir(opts.runsDir, opts.runId);
    const meta = await readMeta(dir);
    if (!meta) throw new Error(`run ${opts.runId} has no run.json: it cannot be adopted`);
    const run = new TmuxRun(opts, dir, opts.from);
    run.panePid = meta.panePid;
    run.agentPane = meta.paneId;
    opts.onCreated?.(run);
    return TmuxRun.supervised(run, () => run.reattach());
  }

  /**
   * Ends whatever is left of a run this worker will not continue (the hub said stop, or
   * never answered for it): its processes, tmux server, watchdog and directory. For a
   * directory whose run is unknown or dead too.
   */
  static async remove(runsDir: string, runId: string, tmuxBin: string, killGraceMs = 1000): Promise<void> {
    const dir = runDir(runsDir, runId);
    const socket = join(dir, RunFiles.socket);
    await stopWatchdog(dir);
    // Every window's pane: during a takeover the operator's shell has one besides the agent's.
    const panes = await tmux(tmuxBin, socket, ['list-panes', '-s', '-t', SESSION, '-F', '#{pane_pid}']);
    const pids = panes.code === 0 ? panes.stdout.split('\n').map((l) => Number.parseInt(l, 10)).filter((pid) => pid > 1) : [];
    await Promise.all(pids.map((pid) => reapRun(pid, killGraceMs)));
    await tmux(tmuxBin, socket, ['kill-server']);
    // What was started and detached (nohup, setsid) outlives the panes: it carries the run's markers.
    await reapProcesses(() => markedProcesses(dir), killGraceMs);
    await rm(dir, { recursive: true, force: true });
  }

  /** Whether any process of the run (its root aside) is stopped — e.g. by a hard pause before the worker restarted. */
  async stopped(): Promise<boolean> {
    if (this.serverGone) return false;
    const procs = (await runProcesses(this.panePid)).filter((p) => p.pid !== this.panePid);
    return (await Promise.all(procs.map(isHalted))).some(Boolean);
  }

  /** `onOutput` has room again (see `outputRoom`): the capture is read on. */
  resumeOutput(): void {
    this.follower.resume();
  }

  /** The frame journal's hook (RunReporter `onFrameSealed`): `pushedThrough` counts characters of `onOutput`. */
  recordFrame(frame: Frame, pushedThrough: number): void {
    if (this.removed) return; // the run ended and its directory went: nothing will resume it
    try {
      this.journal.append(frame, this.follower.positionAt(pushedThrough));
      this.follower.release(pushedThrough);
    } catch (err) {
      if (!this.removed) this.log.error({ err, seq: frame.seq }, 'cannot journal a frame: a worker restart would resend less of this run');
    }
  }

  /** The pane's process id (the wrapper shell; it leads the run's session). */
  get pid(): number {
    return this.panePid;
  }

  /**
   * The process group the command runs in, of its own (see `groupLauncher()`); null before
   * the command is launched, when it has none (no perl, or a run of an older worker), or
   * once its leader is gone. Reads one small file and one /proc/<pid>/stat at most.
   */
  commandGroup(): number | null {
    if (this.serverGone || this.panePid <= 1) return null;
    if (this.group === null) {
      let text: string;
      try {
        text = readFileSync(join(this.dir, RunFiles.commandGroup), 'utf8');
      } catch {
        return null; // not launched yet, or launched without a group of its own
      }
      const pgid = Number.parseInt(text, 10);
      if (!(pgid > 1)) return null;
      this.group = pgid;
    }
    // The leader is the command itself: in the run's session, leading its group. A pid
    // reused by an unrelated process after the command ended would fail this.
    const leader = procfs.stat(this.group);
    return leader && leader.pgid === this.group && leader.sid === this.panePid ? this.group : null;
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

  /**
   * The agent pane's real size and terminal type, asked of tmux (for the recording's header):
   * null when tmux cannot answer (the run just ended).
   */
  async paneInfo(): Promise<PaneInfo | null> {
    // Known from new-session when this worker started the run (a quick command may be gone
    // before its start is reported); asked of the live pane for an adopted one.
    let size = this.paneSize;
    if (!size) {
      const r = await tmux(this.opts.tmuxBin, this.socketPath, ['display-message', '-p', '-t', this.agentPane, '#{pane_width} #{pane_height}']);
      size = r.code === 0 ? parseSize(r.stdout.trim().split(' ')) : null;
    }
    return paneOf(size);
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
      await this.tmuxControl.run(sendKeysCommands(target, data));
    });
  }

  /** The control client's process id (null until its first use — a keystroke or a status change — or while none runs): for tests. */
  get inputClientPid(): number | null {
    return this.tmuxControl.pid;
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
      capture: this.capture,
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
    if (this.cancelRequested || this.detached) return this.result;
    this.cancelRequested = true;
    this.log.info('cancelling run');
    // A run re-adopted after its command ended has no pane: its pid may belong to anyone by now.
    if (!this.serverGone) await terminateRun(this.panePid); // continues a paused run too, so it meets its SIGTERM now
    const ended = await Promise.race([
      this.commandEnded.then(() => true),
      sleep(this.opts.killGraceMs ?? 2000, false, { ref: false }),
    ]);
    if (!ended) {
      this.killedHard = true;
      this.log.warn('run ignored SIGTERM; sending SIGKILL');
      if (!this.serverGone) await signalRun(this.panePid, 'SIGKILL');
      await tmux(this.opts.tmuxBin, this.socketPath, ['kill-server']); // its `wait-for done` client exits with it
    }
    return this.result;
  }

  private async launch(): Promise<void> {
    const opts = this.opts as TmuxRunOptions;
    const dir = this.dir;
    const wrapper = join(dir, RunFiles.wrapper);
    const perlBin = opts.perlBin === undefined ? findExecutable('perl', undefined) : opts.perlBin;
    const bin = join(dir, RunFiles.bin);
    // Independent files: written at once (the start of a run is on the first frame's path).
    await Promise.all([
      writeFile(wrapper, wrapperScript({ tmuxBin: opts.tmuxBin, dir, command: opts.command, cwd: opts.cwd, perlBin }), { mode: 0o600 }),
      writeFile(this.inboxPath, '', { mode: 0o600 }),
      writeFile(this.outboxPath, '', { mode: 0o600 }),
      writeFile(join(dir, RunFiles.output), '', { mode: 0o600 }),
      mkdir(bin, { mode: 0o700 }).then(() => writeFile(join(bin, 'handoff-agent'), agentCliWrapper(opts.nodeBin ?? process.execPath), { mode: 0o700 })),
    ]);
    await this.follower.start();

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
        ...set('default-terminal', PANE_TERM),
        ...['new-session', '-d', '-P', '-F', '#{pane_pid} #{pane_id} #{pane_width} #{pane_height}', '-s', SESSION, '-x', String(opts.cols), '-y', String(opts.rows)],
        // The pane starts in the run's directory, not the worker's: what the pane reports
        // (a hand-back's context, an operator shell's start) is the run's from its first
        // moment, before the wrapper's `cd`. A missing one falls back to the worker's, and
        // the wrapper's `cd` reports it.
        ...(opts.cwd !== null ? ['-c', tmuxStartDir(opts.cwd)] : []),
        ...['sh', wrapper, ';'],
        // A share's tmux client (tmate/upterm) attaches to this session: the window keeps
        // the run's size whatever that client's terminal is, so the recording and the
        // dashboards never see a resize. Set on the window: tmux 3.3a crashes when the
        // global option says manual before a session exists, or when a window is added.
        ...['set-option', '-w', '-t', SESSION, 'window-size', 'manual', ';'],
        ...['pipe-pane', '-t', SESSION, '-O', this.capture],
      ],
      { env },
    );
    const [pidText, paneId, ...size] = started.stdout.trim().split(' ');
    this.panePid = Number.parseInt(pidText ?? '', 10);
    this.agentPane = paneId ?? '';
    this.paneSize = parseSize(size);
    if (started.code !== 0 || !(this.panePid > 1) || !/^%\d+$/.test(this.agentPane)) {
      throw new Error(`tmux could not start the run: ${started.stderr.trim() || `exit code ${started.code}`}`);
    }
    const meta: RunMeta = { startedAt: opts.startedAt ?? Date.now(), panePid: this.panePid, paneId: this.agentPane };
    await writeFile(join(dir, RunFiles.meta), JSON.stringify(meta), { mode: 0o600 });
    // Reported while the command is let go and its watchdog spawned (both on the first frame's path).
    opts.onLaunched?.(paneOf(this.paneSize));
    // The command starts at `go`; its watchdog starts meanwhile, not before it (its spawn is
    // on the first frame's path). Either failing fails the start, which leaves nothing behind.
    const [go] = await Promise.all([
      tmux(opts.tmuxBin, this.socketPath, ['wait-for', '-S', 'go']),
      opts.watchdog !== false ? ensureWatchdog({ tmuxBin: opts.tmuxBin, dir, runsDir: opts.runsDir, killGraceMs: opts.killGraceMs }) : null,
    ]);
    if (go.code !== 0) throw new Error(`tmux could not start the run: ${go.stderr.trim() || `exit code ${go.code}`}`);
    // After `go`, off the first frame's path: a `done` the command signals before this waiter
    // starts is remembered by tmux.
    this.waitForDone(env);
    this.log.debug({ panePid: this.panePid, dir }, 'run started in tmux');
  }

  /** Waits without polling: tmux remembers a `done` signalled before anyone waits, and the client exits on its own if the server dies (kill-server, crash). */
  private waitForDone(env: Record<string, string | undefined>): void {
    const waiter = spawn(this.opts.tmuxBin, ['-S', this.socketPath, 'wait-for', 'done'], { stdio: 'ignore', env });
    this.waiter = waiter;
    this.commandEnded = new Promise((resolve) => {
      waiter.once('close', () => resolve());
      waiter.once('error', (err) => {
        this.log.error({ err }, 'cannot wait for the run to end');
        resolve();
      });
    });
  }

  private async reattach(): Promise<void> {
    const panes = await tmux(this.opts.tmuxBin, this.socketPath, ['list-panes', '-s', '-t', SESSION, '-F', '#{pane_id} #{pane_pid}']);
    const live = panes.code === 0 ? panes.stdout.trim().split('\n').map((l) => l.split(' ')) : [];
    const agentAlive = live.some(([id, pid]) => id === this.agentPane && Number(pid) === this.panePid);
    if (agentAlive) this.runEnv = withoutTmuxVars(await readEnviron(this.panePid));
    for (const [paneId, pid] of live) {
      if (paneId === this.agentPane) continue;
      // An operator shell of the previous worker: no one here knows who holds it.
      await tmux(this.opts.tmuxBin, this.socketPath, ['kill-window', '-t', paneId!]);
      await reapProcesses(async () => [...(await operatorShellProcesses(this.dir)), ...(await runProcesses(Number(pid)))], 1000);
      this.log.info({ paneId }, 'closed the operator shell a previous worker left open');
    }
    await this.follower.start();
    if (!agentAlive) {
      // Ended while no worker was there: deliver the rest of the output, then the exit status.
      // With the agent's pane gone and the operator's closed, the server (if any) exits on its own.
      this.serverGone = true;
      this.commandDone = true;
      this.log.info('re-adopted a run whose command ended meanwhile');
      return;
    }
    await tmux(this.opts.tmuxBin, this.socketPath, ['select-window', '-t', this.agentPane]);
    const opts = this.opts;
    // The previous worker may have died after reporting the start and before letting the
    // command go (see `onLaunched`): `go` again. Once the command went, nothing waits for `go`
    // any more, and tmux only remembers one that nobody waits for.
    const [go] = await Promise.all([
      tmux(opts.tmuxBin, this.socketPath, ['wait-for', '-S', 'go']),
      opts.watchdog !== false ? ensureWatchdog({ tmuxBin: opts.tmuxBin, dir: this.dir, runsDir: opts.runsDir, killGraceMs: opts.killGraceMs }) : null,
    ]);
    // The server went meanwhile: the waiter below returns at once, and the outcome is read as for any end.
    if (go.code !== 0) this.log.warn({ stderr: go.stderr.trim() }, 'could not let a re-adopted run go');
    // A `done` signalled before anyone waits is remembered; one the dead worker's orphaned
    // waiter consumed is not — but then the pane is gone and the server exits, ending this waiter too.
    this.waitForDone(this.runEnv);
    this.log.info({ panePid: this.panePid, paneId: this.agentPane }, 'run re-adopted');
  }

  /**
   * Stops watching the run without touching it — what the worker's death does: the run
   * goes on under its watchdog, its output keeps landing in the capture file, and another
   * `TmuxRun` (in this or a restarted worker) can `adopt` it. `result` resolves at once
   * without an exit status; `cancel()` no longer touches the run.
   */
  detach(): void {
    if (this.detached) return;
    this.detached = true;
    this.resolveResult({ exitCode: null, error: 'detached: no longer watched by this worker', cancelled: false });
    this.removed = true; // nothing journaled from here on: the adopter owns the journal
    this.journal.close();
    this.follower.close();
    this.status.dispose();
    this.waiter?.kill('SIGKILL');
    void this.tmuxControl.close();
  }

  private async supervise(): Promise<void> {
    await this.commandEnded;
    if (this.detached) return;
    this.commandDone = true;
    let outcome: RunOutcome;
    try {
      // Whatever the command left behind (background jobs) goes with it, and so does an
      // operator's shell: the capture only counts as complete once every pane's pipe ended,
      // and a pipe ends only when its pane is gone.
      const reaped = this.serverGone
        ? reapProcesses(() => markedProcesses(this.dir), this.opts.killGraceMs ?? 2000)
        : reapRun(this.panePid, this.opts.killGraceMs ?? 2000);
      const [{ killed }] = await Promise.all([reaped, this.closeOperatorShell()]);
      if (killed) this.killedHard = true;
      // With its pane gone, tmux hands the pane's last bytes to the capture pipe and closes
      // it; each pipe's `cat` then meets EOF and records it: every byte is in the file.
      const drained = await this.follower.finish(this.opts.drainTimeoutMs ?? 2000);
      if (!drained) this.log.warn('tmux did not finish handing over output in time');
      outcome = await this.readOutcome();
    } catch (err) {
      this.log.error({ err }, 'run supervision failed');
      outcome = { exitCode: null, error: `worker failed while ending the run: ${String(err)}`, cancelled: this.cancelRequested };
    }
    await this.cleanUp();
    // Output that waited in the capture file for room (a burst, a slow hub) is handed over
    // before the run counts as ended; the file stays until then.
    await this.follower.delivered;
    this.follower.close();
    if (!this.opts.retainDir) await this.release();
    this.log.info({ exitCode: outcome.exitCode, cancelled: outcome.cancelled, error: outcome.error }, 'run ended');
    this.resolveResult(outcome);
  }

  private async readOutcome(): Promise<RunOutcome> {
    const cancelled = this.cancelRequested;
    const status = await readFile(join(this.dir, RunFiles.exitCode), 'utf8').catch(() => null);
    if (status !== null && /^\d+\s*$/.test(status)) return { exitCode: Number.parseInt(status, 10), cancelled };
    const startError = await readFile(join(this.dir, RunFiles.startError), 'utf8').catch(() => null);
    if (startError !== null) return { exitCode: null, error: startError, cancelled };
    // This worker was frozen or hung past the hub's grace: its watchdog stopped the run meanwhile.
    const abandoned = await readFile(join(this.dir, RunFiles.abandoned), 'utf8').catch(() => null);
    if (abandoned !== null) return { exitCode: null, error: `stopped by its watchdog at ${abandoned.trim()}: the worker was unresponsive past the hub's reclaim grace`, cancelled };
    // Killed together with its wrapper, which then could not record the status.
    if (cancelled) return { exitCode: 128 + (this.killedHard ? 9 : 15), cancelled };
    return { exitCode: null, error: 'the run ended without reporting an exit status (its tmux server or wrapper was killed)', cancelled };
  }

  /** Leaves no process behind: the run's, its tmux server, its watchdog. Safe to call twice. */
  private async cleanUp(): Promise<void> {
    this.status.dispose();
    await this.tmuxControl.close();
    this.operator = null;
    await this.shell?.close();
    if (this.panePid > 1 && !this.serverGone) await reapRun(this.panePid, 0).catch(() => undefined);
    await tmux(this.opts.tmuxBin, this.socketPath, ['kill-server']);
    await stopWatchdog(this.dir);
  }

  /** Removes the run directory (see `retainDir`): nothing of the run remains. Idempotent. */
  async release(): Promise<void> {
    this.removed = true;
    this.journal.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** `<runsDir>/<runId>`, refusing a run id that is not a plain directory name. */
function runDir(runsDir: string, runId: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(runId)) throw new Error(`run id ${JSON.stringify(runId)} is not a safe directory name`);
  return join(runsDir, runId);
}

/** The run's command is started by `sh` (the run's wrapper script), in a pane of `PANE_TERM`. */
function paneOf(size: { cols: number; rows: number } | null): PaneInfo | null {
  return size && { ...size, term: PANE_TERM, shell: '/bin/sh' };
}

/** `["120", "32"]` → {cols, rows}; null unless both are positive integers. */
function parseSize([cols, rows]: string[]): { cols: number; rows: number } | null {
  const c = Number(cols);
  const r = Number(rows);
  return Number.isSafeInteger(c) && c > 0 && Number.isSafeInteger(r) && r > 0 ? { cols: c, rows: r } : null;
}

async function readMeta(dir: string): Promise<RunMeta | null> {
  try {
    const meta = JSON.parse(await readFile(join(dir, RunFiles.meta), 'utf8')) as Partial<RunMeta>;
    if (typeof meta.startedAt !== 'number' || typeof meta.panePid !== 'number' || typeof meta.paneId !== 'string') return null;
    return { startedAt: meta.startedAt, panePid: meta.panePid, paneId: meta.paneId };
  } catch {
    return null;
  }
}

/**
 * Every process started in the run (`HANDOFF_INBOX` names this run directory, unique to
 * it) or from an operator shell of it — through setsid and daemonizing, and after the
 * pane that started them is gone.
 */
async function markedProcesses(dir: string): Promise<ProcInfo[]> {
  const [run, operator] = await Promise.all([processesWithEnv('HANDOFF_INBOX', join(dir, RunFiles.inbox)), operatorShellProcesses(dir)]);
  const all = new Map<number, ProcInfo>();
  for (const p of [...run, ...operator]) all.set(p.pid, p);
  return [...all.values()];
}

/** A process's initial environment (/proc/<pid>/environ); empty if unreadable. */
async function readEnviron(pid: number): Promise<Record<string, string | undefined>> {
  const text = await readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '');
  const env: Record<string, string | undefined> = {};
  for (const entry of text.split('\0')) {
    const eq = entry.indexOf('=');
    if (eq > 0) Object.defineProperty(env, entry.slice(0, eq), { value: entry.slice(eq + 1), enumerable: true, writable: true, configurable: true });
  }
  return env;
}

/** The pane's own variables are tmux's, not the run's (a worker inside tmux must not make the run's server look nested). */
function withoutTmuxVars(env: Record<string, string | undefined>): Record<string, string | undefined> {
  return { ...env, TMUX: undefined, TMUX_PANE: undefined };
}
/** TERM inside every run's pane: what the recorded bytes were written for (a player needs it). */
export const PANE_TERM = 'screen-256color';

