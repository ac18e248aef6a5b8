import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll } from 'vitest';
import type { RunControl } from '../run-control.js';
import type { TmuxRun } from '../tmux-run.js';
import { killMatching, uniqueSleep } from './processes.js';

/** What a test file registers for cleanup; everything is undone after each test. */
export interface RunHarness {
  /** A fresh runs directory for the file (set before the first test). */
  readonly runsDir: string;
  readonly runs: TmuxRun[];
  readonly controls: RunControl[];
  /** A `sleep` marker unique to the test; whatever still runs with it is killed afterwards. */
  marker(): string;
}

/**
 * Registers the hooks of a test file that starts real runs in tmux: after each test its
 * controls are closed, its runs cancelled and its marked processes killed; the runs
 * directory goes after the last test.
 */
export function useRunHarness(prefix: string): RunHarness {
  let runsDir = '';
  const runs: TmuxRun[] = [];
  const controls: RunControl[] = [];
  const markers: string[] = [];
  beforeAll(async () => {
    runsDir = await mkdtemp(join(tmpdir(), prefix));
  });
  afterEach(async () => {
    for (const c of controls.splice(0)) c.close();
    await Promise.all(runs.splice(0).map((r) => r.cancel()));
    for (const m of markers.splice(0)) killMatching(m);
  });
  afterAll(async () => {
    await rm(runsDir, { recursive: true, force: true });
  });
  return {
    get runsDir() {
      return runsDir;
    },
    runs,
    controls,
    marker() {
      const m = uniqueSleep();
      markers.push(m);
      return m;
    },
  };
}
