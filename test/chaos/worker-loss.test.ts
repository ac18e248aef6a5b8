import { randomBytes } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LiveSession } from '@handoff/shared';
import { api, emitAck, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { untilNoProcess } from '../support/processes.js';
import { startWorker } from '../support/worker.js';

const LOST_AFTER_MS = 2000;
const RECLAIM_GRACE_MS = 1500;
const HEARTBEAT_MS = 400;

describe('chaos: a worker dies (SIGKILL), 5 times', () => {
  let hub: TestHub;
  let operator: string;
  let admin: string;
  let viewer: Viewer;

  beforeAll(async () => {
    hub = await startTestHub({ env: { WORKER_LOST_AFTER: `${LOST_AFTER_MS}ms`, WORKER_RECLAIM_GRACE: `${RECLAIM_GRACE_MS}ms`, HEARTBEAT_INTERVAL: `${HEARTBEAT_MS}ms`, SWEEP_INTERVAL: '100ms' } });
    operator = await hub.token('operator');
    admin = await hub.token('admin');
    viewer = await Viewer.connect(hub.url, await hub.token('observer'));
  });
  afterAll(async () => {
    viewer?.close();
    await hub?.stop();
  });

  it('its sessions go ERROR within WORKER_LOST_AFTER + 2 s, its runs stay running through WORKER_RECLAIM_GRACE and then go lost; nothing of the run survives (its dead-man switch or the restarted worker ends it)', async () => {
    const token = await hub.workerToken(`chaos-${randomBytes(3).toString('hex')}`);
    const sessionsSeen: LiveSession[] = [];
    viewer.socket.on('session:updated', (s: LiveSession) => sessionsSeen.push(s));
    let runDir: string | undefined;
    const detection: number[] = [];
    for (let round = 1; round <= 5; round++) {
      const marker = `handoff-chaos-${randomBytes(4).toString('hex')}`;
      const w = startWorker({ hubUrl: hub.url, token, runDir });
      runDir = w.runDir;
      const res = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: `sh -c 'sleep 900; : ${marker}' & while true; do echo alive; sleep 0.2; done` } });
      const runId = res.body.id as string;
      await emitAck(viewer.socket, 'run:subscribe', { runId });
      await viewer.untilStatus(runId, ['running'], 20_000);
      await viewer.until('web READY', () => sessionsSeen.find((s) => s.runId === runId && s.status === 'READY'));

      const killedAt = Date.now();
      await w.kill('SIGKILL');
      // At WORKER_LOST_AFTER the worker is lost: nobody can watch through its shares any more…
      const errored = await viewer.until('session ERROR', () => sessionsSeen.find((s) => s.runId === runId && s.status === 'ERROR'), LOST_AFTER_MS + 5000);
      const took = new Date(errored.endedAt!).getTime() - killedAt;
      detection.push(took);
      expect(took).toBeLessThan(LOST_AFTER_MS + RECLAIM_GRACE_MS + 2000);
      expect(errored.errorMessage).toBe('worker lost');
      // …but its run waits for it to come back, for WORKER_RECLAIM_GRACE.
      expect((await api(hub.url, operator, 'GET', `/api/task-runs/${runId}`)).body.status).toBe('running');
      const lost = await viewer.untilStatus(runId, ['lost'], RECLAIM_GRACE_MS + 5000);
      const lostAfter = new Date(lost.endedAt!).getTime() - killedAt;
      // Its last heartbeat was at most one interval before the kill.
      expect(lostAfter).toBeGreaterThanOrEqual(LOST_AFTER_MS + RECLAIM_GRACE_MS - HEARTBEAT_MS - 100);
      expect(lostAfter).toBeLessThan(LOST_AFTER_MS + RECLAIM_GRACE_MS + 2000);
      const audit = await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events?action=run.lost`);
      expect(audit.body.events).toMatchObject([{ actorType: 'system', metadata: { reason: 'reclaim-grace-passed' } }]);

      // The run is over for the hub. Whichever comes first ends what is left of it: its
      // dead-man switch (the lease went stale) or the restarted worker, told by the hub's
      // verdict not to continue it (see worker-restart.test.ts for each on its own).
      const restarted = startWorker({ hubUrl: hub.url, token, runDir });
      const probe = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'echo back' } });
      await emitAck(viewer.socket, 'run:subscribe', { runId: probe.body.id });
      await viewer.untilStatus(probe.body.id, ['succeeded'], 20_000);
      expect(await untilNoProcess(marker)).toEqual([]);
      expect(await untilNoProcess(`${runDir}/${runId}/watchdog.sh`)).toEqual([]);
      expect(readdirSync(runDir)).not.toContain(runId);
      await restarted.kill('SIGTERM');
    }
    if (runDir) rmSync(runDir, { recursive: true, force: true });
    console.log(`worker loss detected after ${detection.map((d) => `${d} ms`).join(', ')} (WORKER_LOST_AFTER ${LOST_AFTER_MS} ms); runs lost after the further WORKER_RECLAIM_GRACE ${RECLAIM_GRACE_MS} ms`);
  });
});
