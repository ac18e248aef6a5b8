import { setImmediate as yieldTurn, setTimeout as sleep } from 'node:timers/promises';
import { ownGroup, procfs, resumeRun, runProcesses, suspendRun, type ProcInfo, type ProcReader } from './process-tree.js';

export interface RunFreezerOptions {
  /** The pane's process (the run's wrapper shell): it leads the run's session and is never stopped (see `suspendRun`). */
  rootPid: number;
  /**
   * The process group the run's command runs in (see `groupLauncher()`), or null when it has
   * none: perl was missing, an older worker started the run, or the command is not launched yet.
   */
  commandGroup: () => number | null;
  reader?: ProcReader;
  /** Clock for the stop's deadline. Default `Date.now`. */
  now?: () => number;
}

/** How a `stop()` ended. */
export type StopResult = 'halted' | 'timeout' | 'superseded';

/**
 * Hard pause and resume of one run, by process group.
 *
 * `stop()` is the hot path: one SIGSTOP to the command's process group (the kernel delivers
 * it to every member, a fork in progress included), one to each other group — and one to
 * each single process in the wrapper's group — that the last full scan found holding a
 * process of the run; then it waits, reading only /proc/<pid>/stat of the group's leader
 * and of the members that scan saw, until each is halted (no fixed sleep: it looks again at
 * once, then backs off). No full /proc scan.
 *
 * `sweep()` runs after the stop was reported, off the hot path: the full scan of before
 * (`suspendRun`) stops whatever of the run left the command's group since the last scan (a
 * `setsid` child, a job-control shell's jobs) — such a process may run a few ms past the
 * report, the one thing the hot path gives up — and remembers the run's processes for the
 * next stop, as `refresh()` does when a run is attached and after a resume. The full scan
 * is also the whole stop when the command has no group of its own.
 *
 * `resume()` continues exactly what was stopped, one SIGCONT per group or single process;
 * a run stopped by somebody else (a previous worker, `adoptStopped`) or through the
 * fallback is continued group by group from a full scan, as before.
 */
export class RunFreezer {
  private readonly rootPid: number;
  private readonly commandGroup: () => number | null;
  private readonly reader: ProcReader;
  private readonly now: () => number;
  /** Groups and single processes signalled SIGSTOP since the last resume. */
  private readonly groups = new Set<number>();
  private readonly singles = new Set<number>();
  /** The run's processes (its root aside) as the last full scan saw them. */
  private known: ProcInfo[] = [];
  /** Continue the whole run from a scan: stopped by the fallback or by somebody else. */
  private wholeRun = false;

  constructor(opts: RunFreezerOptions) {
    this.rootPid = opts.rootPid;
    this.commandGroup = opts.commandGroup;
    this.reader = opts.reader ?? procfs;
    this.now = opts.now ?? Date.now;
  }

  /** The run was found stopped (a previous worker's pause): the next resume continues every group of it. */
  adoptStopped(): void {
    this.wholeRun = true;
  }

  /**
   * Stops the run and resolves once every process it watches is halted (`halted`), or when
   * `timeoutMs` ran out (`timeout`: e.g. a process in uninterruptible disk wait; it stops once
   * that returns), or when `stillWanted()` turned false (`superseded`).
   */
  async stop(timeoutMs: number, stillWanted: () => boolean): Promise<StopResult> {
    const group = this.commandGroup();
    if (group === null) {
      this.wholeRun = true;
      const all = await suspendRun(this.rootPid, timeoutMs, 5, { reader: this.reader, stillWanted, onScan: (procs) => (this.known = procs) });
      if (!stillWanted()) return 'superseded';
      return all ? 'halted' : 'timeout';
    }
    this.signalGroup(group);
    for (const p of this.known) if (p.pgid !== group) this.signalMember(p);

    const watched = new Map<number, true>([[group, true]]);
    for (const p of this.known) watched.set(p.pid, true);
    const deadline = this.now() + timeoutMs;
    for (let round = 0; ; round++) {
      let running = 0;
      for (const pid of watched.keys()) {
        const p = this.reader.stat(pid);
        const ours = p !== null && (p.sid === this.rootPid || this.groups.has(p.pgid) || this.singles.has(p.pid));
        // Gone, or its pid now belongs to a process outside the run: nothing to wait for.
        if (!ours) {
          watched.delete(pid);
          continue;
        }
        if (!this.groups.has(p.pgid) && !this.singles.has(p.pid)) this.signalMember(p); // left its group since the scan
        if (!(await this.reader.isHalted(p))) running += 1;
      }
      if (running === 0) return 'halted';
      if (!stillWanted()) return 'superseded';
      if (this.now() >= deadline) return 'timeout';
      // A SIGSTOP takes effect when its target next runs: usually within the same turn.
      if (round < 3) await yieldTurn();
      else await sleep(Math.min(1 << (round - 3), 10));
    }
  }

  /**
   * After a stop: a full scan (twice clean, like before) stops any process of the run that is
   * still running — one that left the command's group since the last scan — and remembers
   * the run's processes for the next stop. Returns how many it had to stop.
   */
  async sweep(timeoutMs: number, stillWanted: () => boolean): Promise<number> {
    let stopped = 0;
    await suspendRun(this.rootPid, timeoutMs, 5, {
      reader: this.reader,
      gently: true,
      stillWanted,
      onScan: (procs) => (this.known = procs),
      onStopped: (procs) => {
        stopped += procs.length;
        for (const p of procs) this.remember(p);
      },
    });
    return stopped;
  }

  /**
   * Off the hot path (a run attached, a resume reported): one full scan remembers the run's
   * processes, so the next stop signals the groups they left the command's for, on its hot path.
   */
  async refresh(): Promise<void> {
    this.known = (await runProcesses(this.rootPid, this.reader, true)).filter((p) => p.pid !== this.rootPid);
  }

  /** Continues what was stopped. */
  async resume(): Promise<void> {
    for (const pgid of this.groups) kill(-pgid, 'SIGCONT');
    for (const pid of this.singles) kill(pid, 'SIGCONT');
    this.groups.clear();
    this.singles.clear();
    if (this.wholeRun) {
      this.wholeRun = false;
      await resumeRun(this.rootPid, this.reader);
    }
  }

  private signalGroup(pgid: number): void {
    this.groups.add(pgid);
    kill(-pgid, 'SIGSTOP');
  }

  /** One process of the run outside the command's group: its whole group, unless that is the wrapper's (which must keep running). */
  private signalMember(p: ProcInfo): void {
    if (p.pid === this.rootPid) return;
    if (p.pgid > 1 && p.pgid !== this.rootPid && p.pgid !== ownGroup()) {
      if (!this.groups.has(p.pgid)) this.signalGroup(p.pgid);
      return;
    }
    this.singles.add(p.pid);
    kill(p.pid, 'SIGSTOP');
  }

  /** Records a process `suspendRun` signalled (whole group or alone, as `signalProcesses` did). */
  private remember(p: ProcInfo): void {
    if (p.pgid > 1 && p.pgid !== this.rootPid && p.pgid !== ownGroup()) this.groups.add(p.pgid);
    else this.singles.add(p.pid);
  }
}

function kill(target: number, signal: NodeJS.Signals): void {
  try {
    process.kill(target, signal);
  } catch {
    // ESRCH: gone since it was seen.
  }
}
