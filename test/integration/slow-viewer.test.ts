import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Frame } from '@handoff/shared';
import { api, connect, emitAck, eventually, joinFrames, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

// A viewer that stops reading (its TCP socket paused) must not slow the others or grow the
// hub's memory without bound: past VIEWER_MAX_QUEUED_BYTES live frames skip it, and after
// VIEWER_STUCK_AFTER it is disconnected.
describe('a slow dashboard never back-pressures the others', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let operator: string;

  beforeAll(async () => {
    hub = await startTestHub({ env: { VIEWER_MAX_QUEUED_BYTES: String(256 * 1024), VIEWER_STUCK_AFTER: '2s' } });
    operator = await hub.token('operator');
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`slow-${randomBytes(3).toString('hex')}`) });
  });
  afterAll(async () => {
    await worker?.stop();
    await hub?.stop();
  });

  it('a stuck viewer is skipped, then disconnected; a healthy one gets every frame throughout', async () => {
    const healthy = await Viewer.connect(hub.url, operator);
    const stuck = await connect(hub.url, '/dashboard', operator);
    const res = await api(hub.url, operator, 'POST', '/api/task-runs', {
      // ~12 MB of output over ~4 s: far more than the OS buffers of one stalled connection.
      command: { script: 'sleep 1; for i in $(seq 1 40); do head -c 220000 /dev/urandom | base64 -w 0; echo; sleep 0.08; done; echo done-marker' },
    });
    const runId = res.body.id as string;
    await emitAck(healthy.socket, 'run:subscribe', { runId });
    await healthy.untilStatus(runId, ['running'], 20_000);
    expect((await emitAck<{ frames: Frame[] }>(healthy.socket, 'term:subscribe', { runId })).ok).toBe(true);
    expect((await emitAck(stuck, 'term:subscribe', { runId })).ok).toBe(true);
    // The stuck viewer's client stops reading: what the hub sends it piles up in its queue.
    const engine = (stuck.io as unknown as { engine: { transport: { ws?: { _socket?: { pause(): void } } } } }).engine;
    engine.transport.ws!._socket!.pause();
    const stuckId = stuck.id!;
    const pausedAt = Date.now();

    await eventually('the stuck viewer disconnected by the hub', async () => !(await hub.io.of('/dashboard').fetchSockets()).some((s) => s.id === stuckId), 30_000);
    const cutAfter = Date.now() - pausedAt;
    expect(hub.logs()).toContain('dashboard lagging: live frames skip it until it drains');
    expect(hub.logs()).toContain('dashboard stuck: disconnected');

    const done = await healthy.untilStatus(runId, ['succeeded', 'failed'], 60_000);
    expect(done.status).toBe('succeeded');
    // The healthy viewer saw the whole run live, gapless, ending with the marker.
    await healthy.until('the last frame', () => (healthy.live.get(runId) ?? []).some((f) => f.data.includes('done-marker')), 15_000);
    const all = await emitAck<{ frames: Frame[] }>(healthy.socket, 'term:subscribe', { runId, afterSeq: 0 });
    if (!all.ok) throw new Error(all.error.message);
    const seen = joinFrames(all.data.frames);
    const live = (healthy.live.get(runId) ?? []).map((f) => f.data).join('');
    expect(live.length).toBeGreaterThan(10_000_000);
    expect(seen.endsWith(live.slice(-1000))).toBe(true);
    console.info(`slow viewer: disconnected ${cutAfter} ms after it stopped reading (VIEWER_STUCK_AFTER 2 s)`);
    healthy.close();
    stuck.close();
  });
});
