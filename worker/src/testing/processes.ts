import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import { stopPending } from '../process-tree.js';

/**
 * A `sleep` duration unique to one test (e.g. `1000.48213`), so `pgrep -f` finds exactly
 * the processes that test started — a plain `sleep 100` would not carry a marker.
 */
export function uniqueSleep(): string {
  return `1000.${randomInt(10_000, 99_999)}`;
}

/** Pids of live processes whose command line matches `pattern` (pgrep -f; no shell, so the probe never matches itself). */
export function pgrep(pattern: string): number[] {
  try {
    return execFileSync('pgrep', ['-f', pattern], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

/** Whether a tmux server answers on `socket`. */
export function tmuxServerAlive(socket: string): boolean {
  try {
    execFileSync('tmux', ['-S', socket, 'list-sessions'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Kills what a failed test may have left running (by marker). */
export function killMatching(pattern: string): void {
  for (const pid of pgrep(pattern)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * A directory name that is a tmux format running a command: `#(…)` in an argument tmux
 * expands (`-c start-directory`) would create `path`. A name holds no `/`, so the command
 * spells it in octal; backquotes, as `#(…)` ends at the first `)`.
 */
export function tmuxFormatRunning(path: string): string {
  return `a#(touch "\`printf '${path.replaceAll('/', '\\057')}'\`")b`;
}

/**
 * Whether a process is stopped or has SIGSTOP pending, read synchronously: either way it
 * runs none of its own code before it stops (a member of a stopped group that the
 * scheduler has not run since the signal still shows its old state).
 */
export function haltedNow(pid: number): boolean {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return /^State:\s+[Tt]/m.test(status) || stopPending(status);
}

/** Pid of the tmux (or tmate) server answering on `socket`. */
export function serverPid(socket: string, bin = 'tmux'): number {
  return Number(execFileSync(bin, ['-S', socket, 'display', '-p', '#{pid}'], { encoding: 'utf8' }).trim());
}
