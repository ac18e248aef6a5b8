import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Frame } from '@handoff/shared';
import { em } from '../../server/src/infra/db/orm.js';
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
    // The hub's end of that connection: disconnecting a client that reads nothing must close it
    // (a websocket close handshake it cannot answer would keep it, and its queue, for 30 s).
    let tcpClosedAt = 0;
    serverTcp(hub, stuckId).once('close', () => (tcpClosedAt = Date.now()));

    await eventually('the stuck viewer disconnected by the hub', async () => !(await hub.io.of('/dashboard').fetchSockets()).some((s) => s.id === stuckId), 30_000);
    const cutAfter = Date.now() - pausedAt;
    await eventually('its connection closed on the hub', async () => tcpClosedAt > 0, 5_000);
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

/** The hub's TCP socket under a dashboard's websocket (engine.io's transport → ws → net.Socket). */
function serverTcp(hub: TestHub, socketId: string): Socket {
  const conn = hub.io.of('/dashboard').sockets.get(socketId)?.conn as unknown as { transport: { socket: { _socket: Socket } } } | undefined;
  if (!conn) throw new Error(`no dashboard socket ${socketId} on the hub`);
  return conn.transport.socket._socket;
}

// A hub draining (SIGTERM, a rolling restart) closes its dashboards' websockets; one that reads
// nothing never answers that close, and must not hold the drain for ws's 30 s close timeout.
describe('a draining hub does not wait on a dashboard that stopped reading', () => {
  let hub: TestHub;
  let worker: WorkerProcess;

  beforeAll(async () => {
    hub = await startTestHub({ env: { VIEWER_MAX_QUEUED_BYTES: String(256 * 1024), VIEWER_STUCK_AFTER: '60s' } });
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`drain-${randomBytes(3).toString('hex')}`) });
  });
  afterAll(async () => {
    await worker?.stop();
    await hub?.stop();
  });

  it('a lagging dashboard is cut when the drain closes it: the drain ends after its grace', async () => {
    const operator = await hub.token('operator');
    const slow = await connect(hub.url, '/dashboard', operator);
    const res = await api(hub.url, operator, 'POST', '/api/task-runs', {
      command: { script: 'sleep 1; for i in $(seq 1 30); do head -c 220000 /dev/urandom | base64 -w 0; echo; done; sleep 60' },
    });
    const runId = res.body.id as string;
    expect((await emitAck(slow, 'term:subscribe', { runId })).ok).toBe(true);
    const tcp = serverTcp(hub, slow.id!);
    (slow.io as unknown as { engine: { transport: { ws?: { _socket?: { pause(): void } } } } }).engine.transport.ws!._socket!.pause();
    await eventually('the slow viewer lagging', async () => hub.logs().includes('dashboard lagging'), 20_000);

    const drainStarted = Date.now();
    await hub.close();
    // Cut after the drain's grace (1 s), not after ws's 30 s close timeout.
    expect(Date.now() - drainStarted).toBeLessThan(10_000);
    expect(tcp.destroyed).toBe(true);
    expect(hub.logs()).toContain('drained');
    slow.close();
  });
});

// A viewer that lagged and drained again missed live frames; when those were a run's last
// output, no later frame shows it the gap: the hub tells it (`term:resume`).
describe('a dashboard that drained after lagging resyncs what it missed', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let operator: string;

  beforeAll(async () => {
    hub = await startTestHub({ env: { VIEWER_MAX_QUEUED_BYTES: String(256 * 1024), VIEWER_STUCK_AFTER: '60s' } });
    operator = await hub.token('operator');
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`lag-${randomBytes(3).toString('hex')}`) });
  });
  afterAll(async () => {
    await worker?.stop();
    await hub?.stop();
  });

  it('a viewer that lagged through a run’s last output is told when it drained, and its resync brings the rest', async () => {
    const healthy = await Viewer.connect(hub.url, operator);
    const slow = await connect(hub.url, '/dashboard', operator);
    const received: Frame[] = [];
    slow.on('term:frame', ({ frames }: { frames: Frame[] }) => received.push(...frames));
    let resumed = 0;
    slow.on('term:resume', () => (resumed += 1));
    // ~6.5 MB (more than the OS buffers of a stalled connection); then, once the hub has seen
    // the viewer lagging (the test touches `go`), the last line, then silence: no later frame
    // would show the gap. Without the wait the whole output can be queued to the viewer
    // before the guard's next look, and nothing is skipped at all.
    const go = join(mkdtempSync(join(tmpdir(), 'handoff-lag-')), 'go');
    const res = await api(hub.url, operator, 'POST', '/api/task-runs', {
      command: {
        script: `sleep 1; for i in $(seq 1 22); do head -c 220000 /dev/urandom | base64 -w 0; echo; done; while [ ! -e ${go} ]; do sleep 0.05; done; echo last-line-marker; sleep 30`,
      },
    });
    const runId = res.body.id as string;
    await emitAck(healthy.socket, 'run:subscribe', { runId });
    await healthy.untilStatus(runId, ['running'], 20_000);
    healthy.close();
    expect((await emitAck(slow, 'term:subscribe', { runId })).ok).toBe(true);
    const socket = (slow.io as unknown as { engine: { transport: { ws?: { _socket?: { pause(): void; resume(): void } } } } }).engine.transport.ws!._socket!;
    socket.pause();
    await eventually('the slow viewer lagging', async () => hub.logs().includes('dashboard lagging'), 15_000);
    writeFileSync(go, '');
    // The hub recorded (and so sent on, or skipped for the lagging) the last line.
    await eventually('the last line recorded', async () =>
      (await em(hub.orm).execute<{ tail: string | null }[]>(
        `select string_agg(data, '' order by seq) as tail from (select data, seq from recording_chunks where run_id = ? order by seq desc limit 5) x`, [runId],
      ))[0]?.tail?.includes('last-line-marker'), 30_000);
    socket.resume(); // long before VIEWER_STUCK_AFTER: it drains instead of being cut off
    await eventually('term:resume once drained', async () => resumed > 0, 10_000);
    // What a dashboard does then: subscribe again from the last frame it has.
    const lastSeq = Math.max(0, ...received.map((f) => f.seq));
    const rest = await emitAck<{ frames: Frame[] }>(slow, 'term:subscribe', { runId, afterSeq: lastSeq });
    if (!rest.ok) throw new Error(rest.error.message);
    const live = received.filter((f) => f.seq <= lastSeq).map((f) => f.data).join('');
    expect(live).not.toContain('last-line-marker'); // the skipped output held the last line
    expect(rest.data.frames.map((f) => f.data).join('')).toContain('last-line-marker');
    await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
    slow.close();
  });
});
