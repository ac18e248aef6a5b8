import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, expect, it } from 'vitest';
import { findRunDirs } from './stale-runs.js';
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

async function runsDirForTest(): Promise<string> {
  const runsDir = await mkdtemp(join(tmpdir(), 'handoff-stale-'));
  cleanups.push(() => rm(runsDir, { recursive: true, force: true }));
  return runsDir;
}

it('finds only run-id-named directories, and nothing when the runs directory does not exist yet', async () => {
  const runsDir = await runsDirForTest();
  const runId = randomUUID();
  await mkdir(join(runsDir, runId));
  await mkdir(join(runsDir, 'not-a-run'));
  await writeFile(join(runsDir, randomUUID()), ''); // a file, not a run directory
  expect(await findRunDirs(runsDir)).toEqual([runId]);
  expect(await findRunDirs(join(tmpdir(), `handoff-missing-${randomUUID()}`))).toEqual([]);
});

it('start-up inspection touches nothing: a live run stays live until the hub decides; remove() then ends it completely', async () => {
  const runsDir = await runsDirForTest();
  const marker = uniqueSleep();
  cleanups.push(() => killMatching(marker));
  let out = '';
  const run = await TmuxRun.start({
    runId: randomUUID(),
    runsDir,
    command: { script: `nohup sleep ${marker} >/dev/null 2>&1 & sleep ${marker}` },
    cwd: null,
    env: { PATH: process.env.PATH, LANG: 'C.UTF-8' },
    cols: 80,
    rows: 24,
    tmuxBin: TMUX,
    onOutput: (t) => (out += t),
    logger: pino({ level: 'silent' }),
  });
  const socket = join(run.dir, 'tmux.sock');
  cleanups.push(() => {
    if (tmuxServerAlive(socket)) execFileSync('tmux', ['-S', socket, 'kill-server']); // only if the test failed
  });
  await until(() => pgrep(`^sleep ${marker}`).length === 2, 'both sleeps');
  run.detach(); // the worker "dies"

  expect(await TmuxRun.inspect(runsDir, run.runId, TMUX)).toBe('live');
  expect(tmuxServerAlive(socket)).toBe(true);
  expect(pgrep(`^sleep ${marker}`)).toHaveLength(2);

  await TmuxRun.remove(runsDir, run.runId, TMUX);
  expect(tmuxServerAlive(socket)).toBe(false);
  expect(pgrep(marker)).toEqual([]);
  expect(existsSync(run.dir)).toBe(false);
  expect(out).toBe('');
});

it('a directory without a run that could be continued is dead: a bare tmux server a predecessor left, or an abandoned run', async () => {
  const runsDir = await runsDirForTest();
  const marker = uniqueSleep();
  cleanups.push(() => killMatching(marker));
  // A run directory whose worker died before it recorded the run (no run.json), with a live server.
  const bare = randomUUID();
  const dir = join(runsDir, bare);
  await mkdir(dir, { mode: 0o700 });
  const socket = join(dir, 'tmux.sock');
  cleanups.push(() => {
    if (tmuxServerAlive(socket)) execFileSync('tmux', ['-S', socket, 'kill-server']);
  });
  execFileSync('tmux', ['-S', socket, '-f', '/dev/null', 'new-session', '-d', '-s', 'run', 'sh', '-c', `nohup sleep ${marker} >/dev/null 2>&1 & sleep ${marker}`]);
  await until(() => pgrep(`^sleep ${marker}`).length === 2, 'both sleeps');
  expect(await TmuxRun.inspect(runsDir, bare, TMUX)).toBe('dead');
  await TmuxRun.remove(runsDir, bare, TMUX);
  expect(tmuxServerAlive(socket)).toBe(false);
  expect(pgrep(marker)).toEqual([]);
  expect(existsSync(dir)).toBe(false);

  const abandoned = randomUUID();
  await mkdir(join(runsDir, abandoned));
  await writeFile(join(runsDir, abandoned, 'run.json'), JSON.stringify({ startedAt: 1, panePid: 2, paneId: '%0' }));
  await writeFile(join(runsDir, abandoned, 'exit-code'), '0\n');
  expect(await TmuxRun.inspect(runsDir, abandoned, TMUX)).toBe('ended');
  await writeFile(join(runsDir, abandoned, 'abandoned'), new Date().toISOString());
  expect(await TmuxRun.inspect(runsDir, abandoned, TMUX)).toBe('dead');
});

it('remove() also ends an operator shell a crashed worker left during a takeover, and what the operator detached from it', async () => {
  const runsDir = await runsDirForTest();
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
  cleanups.push(() => TmuxRun.remove(runsDir, run.runId, TMUX));
  await run.openOperatorShell({ id: 'op-1', name: 'Ada' }, 'paused');
  await run.input(`setsid sleep ${marker} & nohup sleep ${marker} >/dev/null 2>&1 & echo "left-$((1+1))"\r`);
  await until(() => out.includes('left-2'), 'the operator’s detached jobs');
  // The agent's sleep and the operator's two (the tmux server carries the marker on its command line too).
  await until(() => pgrep(marker).length >= 3, 'every sleep');

  run.detach(); // the worker "crashes": nothing of the run is ended by it; its successor removes it
  await TmuxRun.remove(runsDir, run.runId, TMUX);
  expect(pgrep(marker)).toEqual([]);
  expect(tmuxServerAlive(join(run.dir, 'tmux.sock'))).toBe(false);
});
