import { readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

interface ProcInfo {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
}

/** Reads every live (non-zombie) process from /proc. Linux only, like the worker. */
async function listProcesses(): Promise<ProcInfo[]> {
  const entries = await readdir('/proc');
  const all = await Promise.all(
    entries.filter((e) => /^\d+$/.test(e)).map((pid) => readFile(`/proc/${pid}/stat`, 'utf8').then(parseStat, () => null)),
  );
  return all.filter((p): p is ProcInfo => p !== null);
}

function parseStat(stat: string): ProcInfo | null {
  // `comm` (field 2) may contain spaces and parentheses: parse from the last ')'.
  const close = stat.lastIndexOf(')');
  const fields = stat.slice(close + 2).split(' ');
  const [state, ppid, pgid, sid] = fields;
  if (state === undefined || state === 'Z' || state === 'X') return null;
  return { pid: Number.parseInt(stat, 10), ppid: Number(ppid), pgid: Number(pgid), sid: Number(sid) };
}

/**
 * The processes belonging to a run whose root (the tmux pane process) is `rootPid`:
 * everything in its session (the pane leads one, so backgrounded and orphaned children
 * stay in it) plus any descendant that moved to another group or session.
 */
export async function runProcesses(rootPid: number): Promise<ProcInfo[]> {
  const procs = await listProcesses();
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
function ownGroup(): number {
  if (cachedOwnGroup === undefined) {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    cachedOwnGroup = parseStat(stat)?.pgid ?? -1;
  }
  return cachedOwnGroup;
}

/** Sends `signal` to every process group holding a process of the run. Returns how many groups. */
export async function signalRun(rootPid: number, signal: NodeJS.Signals): Promise<number> {
  const groups = new Set((await runProcesses(rootPid)).map((p) => p.pgid));
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
 * Ends every process of the run: SIGTERM to their process groups, then SIGKILL to what
 * is left after `graceMs`. Resolves once none remains (or after a last short wait).
 * Returns whether SIGKILL was needed.
 */
export async function reapRun(rootPid: number, graceMs: number, pollMs = 25): Promise<{ killed: boolean }> {
  if ((await signalRun(rootPid, 'SIGTERM')) === 0) return { killed: false };
  if (await waitUntilGone(rootPid, graceMs, pollMs)) return { killed: false };
  await signalRun(rootPid, 'SIGKILL');
  await waitUntilGone(rootPid, 1000, pollMs);
  return { killed: true };
}

async function waitUntilGone(rootPid: number, timeoutMs: number, pollMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await runProcesses(rootPid)).length === 0) return true;
    if (Date.now() >= deadline) return false;
    await sleep(pollMs);
  }
}
