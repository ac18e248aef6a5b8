import { readdirSync, readFileSync } from 'node:fs';

/**
 * Where a pass's CPU went, process by process: the profile that shows what bounds a figure
 * whose every byte crosses several processes (a terminal's output: the run, tmux, the worker,
 * the hub, PostgreSQL, the observers). Read from /proc (clock ticks of 10 ms).
 */
interface Proc {
  comm: string;
  ppid: number;
  /** utime + stime + cutime + cstime: a child's CPU lands in its parent's once it is reaped. */
  ms: number;
}
export type CpuSnapshot = Map<number, Proc>;

function readProc(pid: number): Proc | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const f = stat.slice(close + 2).split(' ');
    return { comm, ppid: Number(f[1]), ms: (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * 10 };
  } catch {
    return undefined; // gone between the listing and the read
  }
}

export function cpuSnapshot(): CpuSnapshot {
  const snap: CpuSnapshot = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const p = readProc(Number(name));
    if (p) snap.set(Number(name), p);
  }
  return snap;
}

/** Busy CPU time of the whole machine so far (all cores, every state but idle and iowait), in ms. */
export function machineBusyMs(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f as [number, number, number, number, number, number, number, number];
  return (user + nice + system + irq + softirq + steal) * 10;
}

/**
 * CPU each group of processes used between two snapshots, in ms. `group` names a process's
 * group from its pid, command name and parent chain (null: not counted). A process that exited
 * inside the window is counted in its parent's group once reaped (the parent must outlive the
 * window: e.g. a run's shell and the `head | base64` it waited for).
 */
export function cpuByGroup(before: CpuSnapshot, after: CpuSnapshot, group: (pid: number, comm: string, ancestors: string[]) => string | null): Map<string, number> {
  const out = new Map<string, number>();
  for (const [pid, p] of after) {
    const ancestors: string[] = [];
    for (let a = after.get(p.ppid), hops = 0; a && hops < 32; a = after.get(a.ppid), hops++) ancestors.push(a.comm);
    const name = group(pid, p.comm, ancestors);
    if (name === null) continue;
    const spent = p.ms - (before.get(pid)?.comm === p.comm ? before.get(pid)!.ms : 0);
    if (spent > 0) out.set(name, (out.get(name) ?? 0) + spent);
  }
  return out;
}
