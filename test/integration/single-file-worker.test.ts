import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Run } from '@handoff/shared';
import { api, eventually } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';

// The machine's own Node (20), not the monorepo's 22: the bundle must run on what a host has.
const SYSTEM_NODE = '/usr/bin/node';

/**
 * dist/handoff-worker.mjs as an operator installs it: built by scripts/build-worker.mjs
 * (what `pnpm build` runs), copied alone into an empty directory, started with plain Node
 * against a real hub; a run that uses the agent CLI goes end to end on real tmux.
 */
describe.skipIf(!existsSync(SYSTEM_NODE))('the single-file worker', () => {
  let hub: TestHub;
  let home: string;
  let worker: ChildProcess | null = null;
  let log = '';

  beforeAll(async () => {
    home = mkdtempSync(path.join(tmpdir(), 'handoff-single-'));
    const built = mkdtempSync(path.join(tmpdir(), 'handoff-build-'));
    execFileSync(process.execPath, ['scripts/build-worker.mjs', '--out', path.join(built, 'handoff-worker.mjs')], { stdio: 'ignore' });
    execFileSync('cp', [path.join(built, 'handoff-worker.mjs'), home]);
    rmSync(built, { recursive: true, force: true });
    hub = await startTestHub();
  });
  afterAll(async () => {
    if (worker && worker.exitCode === null) {
      const gone = new Promise((r) => worker!.once('exit', r));
      worker.kill('SIGTERM');
      await gone;
    }
    await hub?.stop();
    rmSync(home, { recursive: true, force: true });
  });

  it('runs from an empty directory with plain Node 20 and runs a run end to end, the agent CLI included', async () => {
    expect(readdirSync(home)).toEqual(['handoff-worker.mjs']);
    const token = await hub.workerToken(`single-${randomBytes(3).toString('hex')}`);
    worker = spawn(SYSTEM_NODE, ['handoff-worker.mjs'], {
      cwd: home,
      // Nothing of the monorepo: no NODE_PATH, no node_modules around, only what a unit file would set.
      env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: home, HANDOFF_URL: hub.url, HANDOFF_WORKER_TOKEN: token, WORKER_RUN_DIR: path.join(home, 'runs'), LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    worker.stdout!.on('data', (d: Buffer) => (log += d.toString()));
    worker.stderr!.on('data', (d: Buffer) => (log += d.toString()));

    const alice = await hub.token('operator');
    const marker = `single-${randomBytes(3).toString('hex')}`;
    const created = await api(hub.url, alice, 'POST', '/api/task-runs', {
      command: { script: `node --version; handoff-agent request-operator "from the bundle ${marker}" && handoff-agent checkpoint && echo ${marker}-done` },
      liveSession: false,
    });
    expect(created.status).toBe(201);
    const runId = created.body.id as string;
    const done = await eventually('run finished', async () => {
      const run = (await api(hub.url, alice, 'GET', `/api/task-runs/${runId}`)).body as Run;
      return ['succeeded', 'failed', 'cancelled', 'lost'].includes(run.status) ? run : undefined;
    }, 30_000).catch((err: Error) => {
      throw new Error(`${err.message}\nworker log:\n${log}`);
    });
    expect(done, log).toMatchObject({ status: 'succeeded', exitCode: 0 });
    // The CLI the bundle wrote into the run's bin/ reached the hub.
    expect(done.needsOperator?.reason).toBe(`from the bundle ${marker}`);
    const cast = (await api(hub.url, alice, 'GET', `/api/task-runs/${runId}/recording.cast`)).body as string;
    expect(cast).toContain(`${marker}-done`);
  });
});
