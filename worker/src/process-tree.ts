import { readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setImmediate as yieldTurn, setTimeout as sleep } from 'node:timers/promises';

export interface ProcInfo {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  /** /proc state letter: R running, S sleeping, D disk wait, T stopped (SIGSTOP), t traced, … */
  state: string;
}

/** States of a process that is halted by a stop signal (or a tracer). */
const HALTED = new Set(['T', 't']);
/** SIGSTOP (19) in the pending-signal masks of /proc/<pid>/status (bit N-1 for signal N). */
const SIGSTOP_BIT = 1n << 18n;

/**
 * Whether a process can run none of its own code until it is continued: it is stopped, or
 * it sits in an uninterruptible kernel wait with a SIGSTOP pending, which it meets before
 * returning to user space — the case of a shell's vfork parent (dash runs commands through
 * vfork) waiting for a child that was stopped before it could exec.
 */
export async function isHalted(p: ProcInfo): Promise<boolean> {
  if (HALTED.has(p.state)) return true;
  if (p.state !== 'D') return false;
  return stopPending(await readFile(`/proc/${p.pid}/status`, 'utf8').catch(() => ''));
}

/** Whether a /proc/<pid>/status text shows a SIGSTOP pending (SigPnd: for the thread; ShdPnd: for the whole process, where kill() puts it). */
export function stopPending(status: string): boolean {
  return [...status.matchAll(/^(?:SigPnd|ShdPnd):\s*([0-9a-f]+)$/gm)].some((m) => (BigInt(`0x${m[1]}`) & SIGSTOP_BIT) !== 0n);
}

/**
 * How the worker reads processes: all of them (a full /proc scan: O(every process on the
 * host)) or one by pid (O(1)). Injected so tests can count the scans a hot path makes.
 */
export interface ProcReader {
  /**
   * Every live (non-zombie) process. `gently`: yields to the event loop every few entries,
   * for scans off the hot path — under load one pass can take tens of ms, which would hold
   * up every other run's keystrokes and control changes.
   */
  list(opts?: { gently?: boolean }): Promise<ProcInfo[]>;
  /** One process, or null when it is gone (or a zombie). */
  stat(pid: number): ProcInfo | null;
  /** See `isHalted`. */
  isHalted(p: ProcInfo): Promise<boolean>;
}

/** The host's /proc. */
export const procfs: ProcReader = {
  list: (opts) => (opts?.gently ? listProcessesGently() : listProcesses()),
  stat(pid) {
    try {
      return parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    } catch {
      return null;
    }
  },
  isHalted: (p) => isHalted(p),
};

/**
 * Reads every live (non-zombie) process from /proc. Linux only, like the worker.
 * Synchronously on purpose: /proc reads never wait on a disk, and one pass over ~100
 * processes takes ~1 ms this way against ~4–6 ms through the thread pool, which a pause
 * (three passes at least) pays straight into its push → applied delay.
 */
async function listProcesses(): Promise<ProcInfo[]> {
  const all: ProcInfo[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited since the directory was read
    }
    const p = parseStat(stat);
    if (p) all.push(p);
  }
  return all;
}

/** `listProcesses`, yielding to the event loop every 16 entries. */
async function listProcessesGently(): Promise<ProcInfo[]> {
  const all: ProcInfo[] = [];
  const entries = readdirSync('/proc').filter((e) => /^\d+$/.test(e));
  for (let i = 0; i < entries.length; i++) {
    if (i % 16 === 15) await yieldTurn();
    try {
      const p = parseStat(readFileSync(`/proc/${entries[i]}/stat`, 'utf8'));
      if (p) all.push(p);
    } catch {
      // exited since the directory was read
    }
  }
  return all;
}

function parseStat(stat: string): ProcInfo | null {
  // `comm` (field 2) may contain spaces and parentheses: parse from the last ')'.
  const close = stat.lastIndexOf(')');
  const fields = stat.slice(close + 2).split(' ');
  const [state, ppid, pgid, sid] = fields;
  if (state === undefined || state === 'Z' || state === 'X') return null;
  return { pid: Number.parseInt(stat, 10), ppid: Number(ppid), pgid: Number(pgid), sid: Number(sid), state };
}

/**
 * The processes belonging to a run whose root (the tmux pane process) is `rootPid`:
 * everything in its session (the pane leads one, so backgrounded and orphaned children
 * stay in it) plus any descendant that moved to another group or session.
 */
export async function runProcesses(rootPid: number, reader: ProcReader = procfs, gently = false): Promise<ProcInfo[]> {
  const procs = await reader.list({ gently });
  const children = new Map<number, ProcInfo[]>();
  for (const p of procs) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p]);
  const found = new Map<number, ProcInfo>();
  // Match by session, not by pid: a session id cannot be reused while any member lives,
  // whereas the root's pid may already belong to an unrelated process.
  for (const p of procs) if (p.sid === rootPid) found.set(p.pid, p);
  const stack = [...found.values()];
  while (stack.length > 0) {
    const p = stack.pop()!;
    for (const child of children.get(p.pid) ?? []) {
      if (!found.has(child.pid)) {
        found.set(child.pid, child);
        stack.push(child);
      }
    }
  }
  return [...found.values()];
}

let cachedOwnGroup: number | undefined;
/** The worker's own process group: never signalled as a whole. */
export function ownGroup(): number {
  if (cachedOwnGroup === undefined) {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    cachedOwnGroup = parseStat(stat)?.pgid ?? -1;
  }
  return cachedOwnGroup;
}

/** Sends `signal` to every process group holding a process of the run. Returns how many groups. */
export async function signalRun(rootPid: number, signal: NodeJS.Signals, reader: ProcReader = procfs): Promise<number> {
  const groups = new Set((await runProcesses(rootPid, reader)).map((p) => p.pgid));
  for (const pgid of groups) {
    if (pgid <= 1 || pgid === ownGroup()) continue;
    try {
      process.kill(-pgid, signal);
    } catch {
      // ESRCH: the group ended between the scan and the signal.
    }
  }
  return groups.size;
}

/**
 * SIGTERM to every process group of the run, then SIGCONT: a paused (SIGSTOPped) process
 * keeps a SIGTERM pending until it is continued, so without the SIGCONT a paused run would
 * only end by SIGKILL after the grace. TERM goes first so that a continued process meets
 * its pending SIGTERM before it runs another instruction of its own. Returns how many groups.
 */
export async function terminateRun(rootPid: number): Promise<number> {
  const groups = await signalRun(rootPid, 'SIGTERM');
  if (groups > 0) await signalRun(rootPid, 'SIGCONT');
  return groups;
}

/**
 * Pauses the run: SIGSTOP to every process of it except its root, again until each is seen
 * stopped in /proc — so a process that entered a new group between a scan and its signal
 * is caught too, and the caller may tell the hub the run is really halted. The root (the
 * pane's wrapper shell, the worker's own helper that only waits for the command) keeps
 * running on purpose: tmux answers a stopped pane process with SIGCONT to its whole process
 * group, so stopping it would undo the pause. Processes sharing the root's group are
 * stopped one by one; other groups as a whole. Only the run's own processes (its pane's
 * session and descendants) are touched: the worker's other helpers (the `wait-for` client,
 * tmux, the output capture, shares) are not among them. Returns false when something was
 * still not stopped after `timeoutMs` (e.g. a process in uninterruptible disk wait; it
 * stops once that returns).
 */
export async function suspendRun(rootPid: number, timeoutMs = 1000, pollMs = 5, opts: SuspendOptions = {}): Promise<boolean> {
  const reader = opts.reader ?? procfs;
  const deadline = Date.now() + timeoutMs;
  let clean = 0;
  for (;;) {
    const procs = (await runProcesses(rootPid, reader, opts.gently)).filter((p) => p.pid !== rootPid);
    opts.onScan?.(procs);
    const halted = await Promise.all(procs.map((p) => reader.isHalted(p)));
    const running = procs.filter((_, i) => !halted[i]);
    // Twice in a row: a child forked just after a scan listed /proc, by a parent stopped
    // just before its state was read, only shows up in the next scan.
    clean = running.length === 0 ? clean + 1 : 0;
    if (clean === 2) return true;
    if (Date.now() >= deadline) return false;
    if (running.length === 0) continue; // the confirming pass needs no wait, only a fresh look
    // Checked right before the signal, in the same tick: a resume taken since never gets undone.
    if (opts.stillWanted && !opts.stillWanted()) return false;
    signalProcesses(running, 'SIGSTOP', rootPid);
    opts.onStopped?.(running);
    await sleep(pollMs);
  }
}

export interface SuspendOptions {
  reader?: ProcReader;
  /** Checked before each signal: false aborts (a newer control change came). */
  stillWanted?: () => boolean;
  /** Told which processes were just signalled. */
  onStopped?: (procs: readonly ProcInfo[]) => void;
  /** Told the run's processes (its root aside) each scan found. */
  onScan?: (procs: ProcInfo[]) => void;
  /** Scan without holding the event loop (see `ProcReader.list`): for scans off the hot path. */
  gently?: boolean;
}

/** Continues (SIGCONT) every process group of the run. Returns how many groups. */
export function resumeRun(rootPid: number, reader: ProcReader = procfs): Promise<number> {
  return signalRun(rootPid, 'SIGCONT', reader);
}

/**
 * Ends every process of the run: SIGTERM to their process groups (continuing paused
 * ones, see `terminateRun`), then SIGKILL to what is left after `graceMs`. Resolves once
 * none remains (or after a last short wait). Returns whether SIGKILL was needed.
 */
export async function reapRun(rootPid: number, graceMs: number, pollMs = 25): Promise<{ killed: boolean }> {
  if ((await terminateRun(rootPid)) === 0) return { killed: false };
  if (await waitUntilGone(() => runProcesses(rootPid), graceMs, pollMs)) return { killed: false };
  await signalRun(rootPid, 'SIGKILL');
  await waitUntilGone(() => runProcesses(rootPid), 1000, pollMs);
  return { killed: true };
}

/**
 * The live processes whose environment holds `name=value`. A variable set when a
 * process tree starts is inherited by everything in it — through daemonizing, setsid
 * and re-parenting to init — which a parent/child walk cannot follow once a parent died.
 * Processes of other users (unreadable environ) are never matched.
 */
export async function processesWithEnv(name: string, value: string): Promise<ProcInfo[]> {
  const entry = `${name}=${value}`;
  const procs = (await listProcesses()).filter((p) => p.pid !== process.pid);
  const matches = await Promise.all(
    procs.map((p) => readFile(`/proc/${p.pid}/environ`, 'utf8').then((env) => env.split('\0').includes(entry), () => false)),
  );
  return procs.filter((_, i) => matches[i]);
}

/**
 * Signals the given processes: whole process groups where they lead their own, single
 * pids where they share the worker's group (the worker's own helper children) or
 * `singlesIn`, never the worker itself. Returns how many processes were targeted.
 */
export function signalProcesses(procs: readonly ProcInfo[], signal: NodeJS.Signals, singlesIn?: number): number {
  const groups = new Set<number>();
  let targeted = 0;
  for (const p of procs) {
    if (p.pid === process.pid) continue;
    targeted += 1;
    if (p.pgid > 1 && p.pgid !== ownGroup() && p.pgid !== singlesIn) {
      groups.add(p.pgid);
      continue;
    }
    try {
      process.kill(p.pid, signal);
    } catch {
      // ESRCH: gone between the scan and the signal.
    }
  }
  for (const pgid of groups) {
    try {
      process.kill(-pgid, signal);
    } catch {
      // ESRCH: the group ended between the scan and the signal.
    }
  }
  return targeted;
}

/**
 * Ends every process `find` returns, like `reapRun`: SIGTERM, SIGKILL to what is left
 * after `graceMs`, then a last short wait. A process that shows up meanwhile (spawned by
 * one being reaped) gets its SIGTERM as soon as it is seen. Returns whether SIGKILL was needed.
 */
export async function reapProcesses(find: () => Promise<ProcInfo[]>, graceMs: number, pollMs = 25): Promise<{ killed: boolean }> {
  const termed = new Set<number>();
  const term = (procs: ProcInfo[]) => {
    const fresh = procs.filter((p) => !termed.has(p.pid));
    for (const p of fresh) termed.add(p.pid);
    return signalProcesses(fresh, 'SIGTERM');
  };
  if (term(await find()) === 0) return { killed: false };
  if (await waitUntilGone(find, graceMs, pollMs, term)) return { killed: false };
  signalProcesses(await find(), 'SIGKILL');
  await waitUntilGone(find, 1000, pollMs);
  return { killed: true };
}

async function waitUntilGone(
  find: () => Promise<ProcInfo[]>,
  timeoutMs: number,
  pollMs: number,
  onStillThere: (procs: ProcInfo[]) => void = () => undefined,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = await find();
    if (left.length === 0) return true;
    if (Date.now() >= deadline) return false;
    onStillThere(left);
    await sleep(pollMs);
  }
}
