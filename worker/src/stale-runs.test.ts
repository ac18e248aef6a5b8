import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, expect, it } from 'vitest';
import { cleanStaleRuns } from './stale-runs.js';
import { TmuxRun } from './tmux-run.js';
import { killMatching, pgrep, tmuxServerAlive, uniqueSleep } from './testing/processes.js';
import { TMUX, until } from './testing/shares.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  const failures = [];
  for (const c of cleanups.splice(0).reverse()) {
    try {
      await c();
    } catch (err) {
      failures.push(err); // run the other cleanups anyway
    }
  }
  if (failures.length > 0) throw failures[0];
});

it('kills the tmux servers and processes a crashed worker left, then removes their directories', async () => {
  const runsDir = await mkdtemp(join(tmpdir(), 'handoff-stale-'));
  cleanups.push(() => rm(runsDir, { recursive: true, force: true }));
  const marker = uniqueSleep();
  cleanups.push(() => killMatching(marker));

  // What a predecessor leaves after SIGKILL: a run directory with a live tmux server whose
  // pane runs a command, plus a background job that ignores SIGHUP.
  const dir = join(runsDir, randomUUID());
  await mkdir(dir, { mode: 0o700 });
  const socket = join(dir, 'tmux.sock');
  cleanups.push(() => {
    if (tmuxServerAlive(socket)) execFileSync('tmux', ['-S', socket, 'kill-server']); // only if the test failed
  });
  execFileSync('tmux', ['-S', socket, '-f', '/dev/null', 'new-session', '-d', '-s', 'run', 'sh', '-c', `nohup sleep ${marker} >/dev/null 2>&1 & sleep ${marker}`]);
  const unrelated = join(runsDir, 'not-a-run');
  await mkdir(unrelated);
  // Four processes carry the marker: the tmux server (it keeps its client's command
  // line), the pane's `sh -c` and both sleeps.
  for (let i = 0; i < 50 && pgrep(marker).length < 4; i += 1) await new Promise((r) => setTimeout(r, 20));
  expect(tmuxServerAlive(socket)).toBe(true);
  expect(pgrep(marker)).toHaveLength(4);

  expect(await cleanStaleRuns(runsDir, '/usr/bin/tmux', pino({ level: 'silent' }))).toBe(1);

  expect(tmuxServerAlive(socket)).toBe(false);
  expect(pgrep(marker)).toEqual([]);
  expect(existsSync(dir)).toBe(false);
  expect(existsSync(unrelated)).toBe(true); // only run-id-named directories are touched
});

it('is a no-op when the runs directory does not exist yet', async () => {
  expect(await cleanStaleRuns(join(tmpdir(), `handoff-missing-${randomUUID()}`), '/usr/bin/tmux', pino({ level: 'silent' }))).toBe(0);
});

it('also ends an operator shell a crashed worker left during a takeover, and what the operator detached from it', async () => {
  const runsDir = await mkdtemp(join(tmpdir(), 'handoff-stale-'));
  cleanups.push(() => rm(runsDir, { recursive: true, force: true }));
  const marker = uniqueSleep();
  cleanups.push(() => killMatching(marker));
  let out = '';
  const run = await TmuxRun.start({
    runId: randomUUID(),
    runsDir,
    command: { argv: ['sleep', marker] },
    cwd: null,
    env: { PATH: process.env.PATH, LANG: 'C.UTF-8' },
    cols: 80,
    rows: 24,
    tmuxBin: TMUX,
    onOutput: (t) => (out += t),
    logger: pino({ level: 'silent' }),
  });
  cleanups.push(async () => void (await run.cancel()));
  await run.openOperatorShell({ id: 'op-1', name: 'Ada' }, 'paused');
  await run.input(`setsid sleep ${marker} & nohup sleep ${marker} >/dev/null 2>&1 & echo "left-$((1+1))"\r`);
  await until(() => out.includes('left-2'), 'the operator’s detached jobs');
  // The agent's sleep and the operator's two (the tmux server carries the marker on its command line too).
  await until(() => pgrep(marker).length >= 3, 'every sleep');

  // The worker "crashes": nothing of the run is ended by it; its successor cleans up.
  expect(await cleanStaleRuns(runsDir, TMUX, pino({ level: 'silent' }))).toBe(1);
  expect(pgrep(marker)).toEqual([]);
  expect(tmuxServerAlive(join(run.dir, 'tmux.sock'))).toBe(false);
});
