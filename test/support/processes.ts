import { execFileSync } from 'node:child_process';

/** PIDs of processes whose full command line contains `marker` (excluding pgrep itself). */
export function pidsMatching(marker: string): number[] {
  try {
    return execFileSync('pgrep', ['-f', marker], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map(Number)
      .filter((pid) => pid !== process.pid);
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

/** Waits (observing, bounded) until no process matches `marker`; returns what is left. */
export async function untilNoProcess(marker: string, ms = 10_000): Promise<number[]> {
  const deadline = Date.now() + ms;
  let left = pidsMatching(marker);
  while (left.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    left = pidsMatching(marker);
  }
  return left;
}
