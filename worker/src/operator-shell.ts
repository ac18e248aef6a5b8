import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { OperatorCommand } from '@handoff/shared';
import type { CapturedContext } from './handoff-packet.js';
import type { Logger } from './logger.js';
import { processesWithEnv, reapProcesses, runProcesses, type ProcInfo } from './process-tree.js';
import { RunFiles, shellQuote } from './run-script.js';
import { tmux, tmuxStartDir } from './tmux.js';

/**
 * Carried in the environment of an operator shell and of everything started from it
 * (value: the run directory), so that closing the shell finds its processes even once
 * they daemonized or left its session (see `processesWithEnv`).
 */
export const OPERATOR_SHELL_ENV = 'HANDOFF_OPERATOR_SHELL';

/** Name of the operator's tmux window. */
const WINDOW = 'operator';

/** Who took over the run. */
export interface Operator {
  id: string;
  name: string;
}

export interface OperatorShellOptions {
  /** Absolute path of tmux. */
  tmuxBin: string;
  /** The run's private tmux server socket. */
  socket: string;
  /** The run's tmux session: the shell opens as a new window of it. */
  session: string;
  /** The run directory (rc and state files, process marker). */
  dir: string;
  /** The run's `pipe-pane` capture command (see `capturePipeCommand`): the shell's output joins the run's (dashboards, recording). */
  capture: string;
  /**
   * The run's environment. The shell gets the tmux server's environment, which is the
   * run's (the server was started with it), except PATH, which tmux takes from the client
   * that opens the window: that client runs with this environment.
   */
  env: Record<string, string | undefined>;
  /** Where the shell starts (the agent pane's directory); null: tmux's default. */
  startDir: string | null;
  operator: Operator;
  /** What the shell's banner says of the agent: already halted, or halting at its next checkpoint. */
  agent: 'paused' | 'pausing';
  /** bash to run (`--noprofile --rcfile <rc> -i`); null: `sh -i`, which cannot record its env at each prompt. */
  bashBin: string | null;
  logger: Logger;
  /** Closing: ms between SIGTERM and SIGKILL of what the shell left running. Default 1000. */
  killGraceMs?: number;
}

/**
 * An operator's interactive shell inside a run's tmux session, opened on takeover: a new
 * window (selected, so tmate/upterm viewers see it too) whose output joins the run's
 * capture file. It is not a descendant of the pane wrapper, so pausing the agent never
 * stops it. At every prompt bash records its cwd and exported environment in the run
 * directory, so a hand-back sees what the operator `cd`-ed to and `export`-ed.
 */
export class OperatorShell {
  readonly operator: Operator;
  /** tmux pane id (`%N`) of the shell. */
  readonly paneId: string;
  /** The shell's pid (it leads its own session, like every tmux pane). */
  readonly pid: number;

  private readonly opts: OperatorShellOptions;
  private readonly log: Logger;
  private closing: Promise<void> | null = null;

  private constructor(opts: OperatorShellOptions, paneId: string, pid: number) {
    this.opts = opts;
    this.log = opts.logger;
    this.operator = opts.operator;
    this.paneId = paneId;
    this.pid = pid;
  }

  /** Opens the window. Rejects (leaving no window) if tmux cannot. */
  static async open(opts: OperatorShellOptions): Promise<OperatorShell> {
    const rc = join(opts.dir, RunFiles.operatorRc);
    const state = join(opts.dir, RunFiles.operatorState);
    const commands = join(opts.dir, RunFiles.operatorCommands);
    // A previous shell's record must not pass for this one's.
    await Promise.all([rm(state, { force: true }), rm(commands, { force: true })]);
    const banner = takeoverBanner(opts.operator.name, opts.agent);
    await writeFile(rc, opts.bashBin ? bashRc({ statePath: state, commandsPath: commands, outputPath: join(opts.dir, RunFiles.output), banner }) : shRc(banner), { mode: 0o600 });
    const shell = opts.bashBin ? [opts.bashBin, '--noprofile', '--rcfile', rc, '-i'] : ['sh', '-i'];
    // One client command list: the capture is attached before tmux reads the shell's first byte.
    const result = await tmux(
      opts.tmuxBin,
      opts.socket,
      [
        ...['new-window', '-t', `${opts.session}:`, '-n', WINDOW, '-P', '-F', '#{pane_pid} #{pane_id}'],
        ...(opts.startDir ? ['-c', tmuxStartDir(opts.startDir)] : []),
        ...['-e', `${OPERATOR_SHELL_ENV}=${opts.dir}`],
        ...(opts.bashBin ? [] : ['-e', `ENV=${rc}`]), // what an interactive sh reads at start
        ...shell,
        ';',
        // Like the agent's window, it keeps the run's size whatever a share client's terminal is.
        // Per window: tmux 3.3a crashes on new-window while the global option says manual.
        ...['set-option', '-w', 'window-size', 'manual', ';'],
        ...['pipe-pane', '-O', opts.capture],
      ],
      { env: opts.env },
    );
    const [pidText, paneId] = result.stdout.trim().split(' ');
    const pid = Number.parseInt(pidText ?? '', 10);
    const opened = paneId !== undefined && /^%\d+$/.test(paneId) && pid > 1;
    if (result.code !== 0 || !opened) {
      if (opened) await tmux(opts.tmuxBin, opts.socket, ['kill-window', '-t', paneId]);
      throw new Error(`tmux could not open the operator shell: ${result.stderr.trim() || `exit code ${result.code}`}`);
    }
    const shellOf = new OperatorShell(opts, paneId, pid);
    shellOf.log.info({ paneId, pid, operatorId: opts.operator.id, shell: shell[0] }, 'operator shell opened');
    return shellOf;
  }

  /** Whether the shell's pane still exists (the operator may have typed `exit`). */
  async alive(): Promise<boolean> {
    if (this.closing) return false;
    const result = await tmux(this.opts.tmuxBin, this.opts.socket, ['display-message', '-p', '-t', this.paneId, '#{pane_pid}']);
    return result.code === 0 && Number.parseInt(result.stdout.trim(), 10) === this.pid;
  }

  /**
   * The shell's context now: cwd = the pane's current path (its foreground process's
   * directory), else the one recorded at the last prompt; env = the environment recorded
   * at the last prompt (so `export` counts), else the shell's initial one from /proc —
   * reduced to what the operator changed: variables exported or modified relative to the
   * run's environment (the agent has the rest already; nothing else of the operator's
   * session leaves it). Variables that only describe the shell itself (its tmux pane, the
   * worker's marker, PWD) are left out.
   */
  async capture(): Promise<CapturedContext> {
    const [pane, recorded, commands] = await Promise.all([
      tmux(this.opts.tmuxBin, this.opts.socket, ['display-message', '-p', '-t', this.paneId, '#{pane_current_path}']),
      readRecord(join(this.opts.dir, RunFiles.operatorState)),
      readCommands(join(this.opts.dir, RunFiles.operatorCommands)),
    ]);
    const panePath = pane.code === 0 ? pane.stdout.replace(/\n$/, '') : '';
    const cwd = panePath !== '' ? panePath : (recorded?.cwd ?? null);
    const env = recorded?.env ?? (await readEnviron(this.pid)) ?? {};
    return { cwd, env: this.changedByOperator(this.withoutShellVars(env)), commands };
  }

  /**
   * Closes the window and ends everything started from the shell: the shell gets SIGHUP
   * from its terminal (and passes it to its jobs); what survives — `nohup`, `setsid`,
   * `disown` — gets SIGTERM, then SIGKILL after the grace. Removes the shell's files.
   * Idempotent; never rejects.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await tmux(this.opts.tmuxBin, this.opts.socket, ['kill-window', '-t', this.paneId]);
      const { killed } = await reapProcesses(() => this.processes(), this.opts.killGraceMs ?? 1000).catch((err: unknown) => {
        this.log.error({ err }, 'could not end the operator shell’s processes');
        return { killed: false };
      });
      await Promise.all([RunFiles.operatorState, `${RunFiles.operatorState}.tmp`, RunFiles.operatorRc, RunFiles.operatorCommands].map((f) => rm(join(this.opts.dir, f), { force: true })));
      this.log.info({ paneId: this.paneId, killed }, 'operator shell closed');
    })();
    return this.closing;
  }

  /** The shell's session (pane processes and descendants) and whatever carries its marker. */
  private async processes(): Promise<ProcInfo[]> {
    const [session, marked] = await Promise.all([runProcesses(this.pid), operatorShellProcesses(this.opts.dir)]);
    const all = new Map<number, ProcInfo>();
    for (const p of [...session, ...marked]) all.set(p.pid, p);
    return [...all.values()];
  }

  private changedByOperator(env: Record<string, string>): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [name, value] of Object.entries(env)) {
      if (Object.hasOwn(this.opts.env, name) && this.opts.env[name] === value) continue;
      Object.defineProperty(out, name, { value, enumerable: true, writable: true, configurable: true });
    }
    return out;
  }

  private withoutShellVars(env: Record<string, string>): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [name, value] of Object.entries(env)) {
      if (SHELL_VARS.has(name) || name.startsWith('BASH_FUNC_')) continue;
      if (name === 'ENV' && value === join(this.opts.dir, RunFiles.operatorRc)) continue;
      Object.defineProperty(out, name, { value, enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
}

/** Variables of the shell itself, not of the context it hands back. */
const SHELL_VARS = new Set([OPERATOR_SHELL_ENV, 'TMUX', 'TMUX_PANE', '_', 'PWD', 'OLDPWD', 'SHLVL', 'SHELL', 'TERM', 'TERM_PROGRAM', 'TERM_PROGRAM_VERSION', 'COLORTERM']);

/** Processes started from an operator shell of the run in `dir` (by marker), e.g. to clean up after a crashed worker. */
export function operatorShellProcesses(dir: string): Promise<ProcInfo[]> {
  return processesWithEnv(OPERATOR_SHELL_ENV, dir);
}

/** The line the shell prints first, on a line of its own (an operator's name is untrusted: one line, no control characters). */
export function takeoverBanner(name: string, agent: OperatorShellOptions['agent']): string {
  const who = Array.from(name.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ').trim()).slice(0, 80).join('') || 'An operator';
  const state = agent === 'paused' ? 'the agent is paused' : 'the agent pauses at its next checkpoint';
  return `── ${who} took over this run; ${state}. Hand back from the dashboard. ──`;
}

/**
 * The bash rc of an operator shell. Not the user's ~/.bashrc: nothing in it may print into
 * the run's recording or replace the capture. No history file: what an operator types
 * (secrets included) stays out of the worker user's home — bash's in-memory history is
 * still kept, and every entry it adds is recorded (with `$?` and the output offsets) for
 * the hand-back; HISTCONTROL/HISTIGNORE are cleared so that no command escapes it.
 */
function bashRc(p: { statePath: string; commandsPath: string; outputPath: string; banner: string }): string {
  return `# Handoff operator shell (generated by the worker; see worker/src/operator-shell.ts).
HISTFILE=
HISTCONTROL=
HISTIGNORE=
HISTSIZE=10000
PS1='\\[\\e[1;97;41m\\] operator \\[\\e[0m\\] \\w \\$ '
__handoff_state=${shellQuote(p.statePath)}
__handoff_commands=${shellQuote(p.commandsPath)}
__handoff_output=${shellQuote(p.outputPath)}
__handoff_hist=
__handoff_mark=
# At every prompt: the command just run (a new history entry) with its status and where its
# prompt and output lie in the captured output; then the cwd and the exported environment,
# NUL-separated, replaced atomically.
__handoff_record() {
  local status=$? now prev=-1 i entry
  # tmux's capture trails the shell by a few ms: wait (up to ~100 ms) until the output file
  # stops growing, so the command's output lies before the offset recorded as its end.
  for i in 1 2 3 4 5 6 7 8; do
    now=$(command -p stat -c %s -- "$__handoff_output" 2>/dev/null) || now=0
    [[ $now == "$prev" ]] && break
    prev=$now
    command -p sleep 0.015
  done
  entry=$(HISTTIMEFORMAT= builtin history 1)
  if [[ $entry =~ ^[[:space:]]*([0-9]+)[*]?[[:space:]][[:space:]](.*)$ ]] && [[ \${BASH_REMATCH[1]} != "$__handoff_hist" ]]; then
    __handoff_hist=\${BASH_REMATCH[1]}
    printf '%s\\0%s\\0%s\\0%s\\0' "$status" "\${__handoff_mark:-$now}" "$now" "\${BASH_REMATCH[2]}" >> "$__handoff_commands" 2>/dev/null
  fi
  __handoff_mark=$now
  { printf '%s\\0' "$PWD"; command -p env -0; } > "$__handoff_state.tmp" 2>/dev/null &&
    command -p mv -f -- "$__handoff_state.tmp" "$__handoff_state" 2>/dev/null
  return "$status"
}
PROMPT_COMMAND=__handoff_record
printf '\\n%s\\n' ${shellQuote(p.banner)}
`;
}

/** For `sh -i` (no bash): the banner and a prompt; the context comes from tmux and /proc. */
function shRc(banner: string): string {
  return `# Handoff operator shell (generated by the worker; see worker/src/operator-shell.ts).
PS1='operator $ '
printf '\\n%s\\n' ${shellQuote(banner)}
`;
}

/** The record written at the shell's last prompt: `<cwd>\0NAME=value\0…`, or null. */
async function readRecord(path: string): Promise<{ cwd: string | null; env: Record<string, string> } | null> {
  const text = await readFile(path, 'utf8').catch(() => null);
  if (text === null) return null;
  const [cwd, ...entries] = text.split('\0');
  return { cwd: cwd ? cwd : null, env: parseEnvEntries(entries) };
}

/** The commands recorded by the shell (`status\0start\0end\0command\0` each), in order; none when unreadable. */
export async function readCommands(path: string): Promise<OperatorCommand[]> {
  const text = await readFile(path, 'utf8').catch(() => '');
  const fields = text.split('\0');
  const commands: OperatorCommand[] = [];
  // A record cut by a crash mid-write (fewer than four fields) is left out.
  for (let i = 0; i + 4 < fields.length; i += 4) {
    const [status, start, end, command] = fields.slice(i, i + 4) as [string, string, string, string];
    const exitStatus = Number.parseInt(status, 10);
    const startOffset = Number.parseInt(start, 10);
    const endOffset = Number.parseInt(end, 10);
    if (![exitStatus, startOffset, endOffset].every(Number.isSafeInteger) || exitStatus < 0 || exitStatus > 255) continue;
    commands.push({ command, exitStatus, startOffset: Math.max(0, startOffset), endOffset: Math.max(startOffset, endOffset) });
  }
  return commands;
}

/** A process's initial environment (/proc/<pid>/environ), or null if unreadable. */
async function readEnviron(pid: number): Promise<Record<string, string> | null> {
  const text = await readFile(`/proc/${pid}/environ`, 'utf8').catch(() => null);
  return text === null ? null : parseEnvEntries(text.split('\0'));
}

function parseEnvEntries(entries: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const entry of entries) {
    const eq = entry.indexOf('=');
    if (eq <= 0) continue;
    Object.defineProperty(env, entry.slice(0, eq), { value: entry.slice(eq + 1), enumerable: true, writable: true, configurable: true });
  }
  return env;
}
