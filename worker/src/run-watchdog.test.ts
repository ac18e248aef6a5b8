import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { afterEach, expect, it } from 'vitest';
import { LeaseKeeper, writeAbandonAfter } from './run-dir.js';
import { ensureWatchdog, spawnWatchdog, stopWatchdog, watchdogPid } from './run-watchdog.js';
import { TmuxRun } from './tmux-run.js';
import { killMatching, pgrep, serverPid, tmuxServerAlive, uniqueSleep } from './testing/processes.js';
import { TMUX, until } from './testing/shares.js';

const silent = pino({ level: 'silent' });
const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setUp(marker: string, abandonAfterMs: number) {
  const runsDir = await mkdtemp(join(tmpdir(), 'handoff-watchdog-'));
  cleanups.push(() => rm(runsDir, { recursive: true, force: true }));
  cleanups.push(() => killMatching(marker));
  const lease = new LeaseKeeper(runsDir, { intervalMs: 200, logger: silent });
  lease.start();
  cleanups.push(() => lease.stop());
  writeAbandonAfter(runsDir, abandonAfterMs);
  let out = '';
  const run = await TmuxRun.start({
    runId: randomUUID(),
    runsDir,
    // A background job, a nohup one and a setsid one that left the run's session, all ignoring SIGTERM.
    command: { script: `trap '' TERM HUP; sleep ${marker} & nohup sleep ${marker} >/dev/null 2>&1 & setsid sh -c 'trap "" TERM; sleep ${marker}' & echo up; sleep ${marker}` },
    cwd: null,
    env: { PATH: process.env.PATH, LANG: 'C.UTF-8' },
    cols: 80,
    rows: 24,
    tmuxBin: TMUX,
    onOutput: (t) => (out += t),
    logger: silent,
    killGraceMs: 500,
  });
  cleanups.push(() => TmuxRun.remove(runsDir, run.runId, TMUX));
  await until(() => out.includes('up') && pgrep(`^sleep ${marker}`).length === 4, 'the run and its jobs');
  return { runsDir, lease, run, output: () => out };
}

it('with a fresh lease the watchdog leaves the run alone, even when the worker is gone', async () => {
  const marker = uniqueSleep();
  const { run } = await setUp(marker, 1500);
  run.detach(); // no worker watches the run; only the lease says one is alive
  await sleep(3000);
  expect(pgrep(`^sleep ${marker}`)).toHaveLength(4);
  expect(existsSync(join(run.dir, 'abandoned'))).toBe(false);
  expect(tmuxServerAlive(join(run.dir, 'tmux.sock'))).toBe(true);
});

it('a stale lease stops every process of the run, its operator shell’s included, and its tmux server; then the watchdog exits', async () => {
  const marker = uniqueSleep();
  const { run, lease, output } = await setUp(marker, 1500);
  await run.openOperatorShell({ id: 'op-1', name: 'Ada' }, 'paused');
  await run.input(`trap '' TERM; setsid sleep ${marker} & nohup sleep ${marker} >/dev/null 2>&1 & echo "left-$((1+1))"\r`);
  await until(() => output().includes('left-2') && pgrep(`^sleep ${marker}`).length === 6, 'the operator’s jobs');
  run.detach();
  const stoppedAt = Date.now();
  lease.stop(); // the worker froze or died: the lease goes stale

  const watchdog = join(run.dir, 'watchdog.sh');
  expect(pgrep(watchdog)).toHaveLength(1);
  await until(() => pgrep(marker).length === 0, 'every process of the run to be gone', 8000);
  const took = Date.now() - stoppedAt;
  expect(took).toBeGreaterThanOrEqual(1500);
  expect(took).toBeLessThan(1500 + 1000 + 500 + 2000); // threshold + check period + kill grace + slack
  expect(tmuxServerAlive(join(run.dir, 'tmux.sock'))).toBe(false);
  const abandoned = readFileSync(join(run.dir, 'abandoned'), 'utf8').trim();
  expect(Date.parse(abandoned)).toBeGreaterThanOrEqual(stoppedAt + 1000); // an ISO time, after the threshold passed
  await until(() => pgrep(watchdog).length === 0, 'the watchdog to exit', 3000);
  expect(await TmuxRun.inspect(run.dir.slice(0, -run.runId.length - 1), run.runId, TMUX)).toBe('dead');
});

it('leaves no watchdog behind when a run ends normally or is cancelled', async () => {
  const marker = uniqueSleep();
  const { runsDir, run } = await setUp(marker, 60_000);
  const watchdog = join(run.dir, 'watchdog.sh');
  expect(pgrep(watchdog)).toHaveLength(1);
  await run.cancel();
  expect(pgrep(watchdog)).toEqual([]);

  const quick = await TmuxRun.start({
    runId: randomUUID(),
    runsDir,
    command: { argv: ['true'] },
    cwd: null,
    env: { PATH: process.env.PATH },
    cols: 80,
    rows: 24,
    tmuxBin: TMUX,
    onOutput: () => undefined,
    logger: silent,
  });
  await quick.result;
  expect(pgrep(join(quick.dir, 'watchdog.sh'))).toEqual([]);
});

it('a worker that froze (lease stale) but still holds the run learns from its result that the watchdog stopped it', async () => {
  const marker = uniqueSleep();
  const { run, lease } = await setUp(marker, 1500);
  lease.stop(); // frozen: the TmuxRun object is still there, the lease is not touched
  const outcome = await run.result;
  expect(outcome.exitCode).toBeNull();
  expect(outcome.error).toMatch(/^stopped by its watchdog at \d{4}-\d\d-\d\dT.*reclaim grace$/);
  expect(pgrep(marker)).toEqual([]);
});

it('registers itself: a watchdog whose worker died before writing its pid file is found by the next worker, never doubled, and stopped', async () => {
  const marker = uniqueSleep();
  const { runsDir, run } = await setUp(marker, 60_000);
  run.detach(); // the worker is gone
  const opts = { tmuxBin: TMUX, dir: run.dir, runsDir };
  const first = await watchdogPid(run.dir);
  expect(first).toBeGreaterThan(1);
  // A worker that spawned a watchdog and died before writing its pid file: only the script's own write.
  await stopWatchdog(run.dir);
  await rm(join(run.dir, 'watchdog.pid'), { force: true });
  expect(await watchdogPid(run.dir)).toBeNull();
  const orphan = spawnWatchdog(opts);
  orphan.unref();
  const orphanPid = orphan.pid!;
  await until(async () => (await watchdogPid(run.dir)) === orphanPid, 'the watchdog wrote its own pid file');
  // The next worker keeps it rather than starting a second one, and stops it at the run's end.
  expect(await ensureWatchdog(opts)).toBe(orphanPid);
  expect(pgrep(join(run.dir, 'watchdog.sh'))).toEqual([orphanPid]);
  await stopWatchdog(run.dir);
  await until(() => pgrep(join(run.dir, 'watchdog.sh')).length === 0, 'the watchdog stopped');
});

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

it('a run whose directory is removed while no worker holds it (nothing can adopt it) is stopped, its tmux server too, even with a fresh lease', async () => {
  const marker = uniqueSleep();
  const { run } = await setUp(marker, 60_000);
  const server = serverPid(join(run.dir, 'tmux.sock'), TMUX);
  const watchdog = join(run.dir, 'watchdog.sh');
  run.detach(); // the worker is gone; its lease stays fresh (another worker on the host keeps it)
  await rm(run.dir, { recursive: true, force: true });
  await until(() => pgrep(marker).length === 0, 'every process of the run to be gone', 8000); // check period 1 s, kill grace 0.5 s
  await until(() => !alive(server), 'the tmux server to exit', 3000);
  await until(() => pgrep(watchdog).length === 0, 'the watchdog to exit', 3000);
});

it('a run whose directory is removed under its worker ends, and the worker learns it ended without an exit status', async () => {
  const marker = uniqueSleep();
  const { run } = await setUp(marker, 60_000);
  const server = serverPid(join(run.dir, 'tmux.sock'), TMUX);
  await rm(run.dir, { recursive: true, force: true });
  const outcome = await run.result;
  expect(outcome.exitCode).toBeNull();
  expect(outcome.error).toMatch(/without reporting an exit status/);
  expect(pgrep(marker)).toEqual([]);
  expect(alive(server)).toBe(false);
});
