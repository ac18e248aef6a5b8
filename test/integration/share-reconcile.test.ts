import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Socket } from 'socket.io-client';
import type { LiveSession } from '@handoff/shared';
import { api, connect, emitAck, eventually } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';

// The worker side is played by a socket client speaking the worker protocol, so a share can
// "die" without the worker reporting it (what a lost share:failed would look like). The hub,
// its database and the protocol are real.
describe('heartbeats reconcile the worker’s live shares with the hub’s sessions', () => {
  let hub: TestHub;
  let admin: string;
  let worker: Socket;
  const starts: Array<{ sessionId: string; runId: string }> = [];
  const stops: Array<{ sessionId: string; reason: string }> = [];

  beforeAll(async () => {
    hub = await startTestHub({ env: { HEARTBEAT_INTERVAL: '200ms', WORKER_LOST_AFTER: '60s' } });
    admin = await hub.token('admin');
    worker = await connect(hub.url, '/worker', await hub.workerToken(`rec-${randomBytes(3).toString('hex')}`));
    worker.on('run:assign', (_run: unknown, ack: (a: unknown) => void) => ack({ ok: true, data: {} }));
    worker.on('share:start', (share: { sessionId: string; runId: string }, ack: (a: unknown) => void) => {
      starts.push(share);
      ack({ ok: true, data: {} });
    });
    worker.on('share:stop', (stop: { sessionId: string; reason: string }) => stops.push(stop));
    expect((await emitAck(worker, 'worker:hello', { capacity: 2, runs: [], version: 'test' })).ok).toBe(true);
  });
  afterAll(async () => {
    worker?.close();
    await hub?.stop();
  });

  const sessions = async (runId: string) => (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/live-sessions`)).body.sessions as LiveSession[];

  it('a READY share missing from the heartbeat goes ERROR; a share the hub ended is stopped', async () => {
    const runId = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'sleep 60' } })).body.id as string;
    await eventually('assigned', async () => (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}`)).body.status === 'assigned');
    expect((await emitAck(worker, 'run:started', { runId })).ok).toBe(true);
    expect((await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'tmate' })).status).toBe(201);
    const start = await eventually('share:start pushed', async () => starts.find((s) => s.runId === runId));
    expect((await emitAck(worker, 'share:ready', { sessionId: start.sessionId, attachRo: { tmate_ssh_ro: 'ssh ro@x' }, attachRw: { tmate_ssh: 'ssh rw@x' } })).ok).toBe(true);

    // While the worker lists it, the session stays READY (also past the grace).
    for (let i = 0; i < 4; i++) {
      expect((await emitAck(worker, 'worker:heartbeat', { activeRuns: 1, shares: [start.sessionId] })).ok).toBe(true);
      await new Promise((r) => setTimeout(r, 150));
    }
    expect((await sessions(runId)).find((s) => s.id === start.sessionId)?.status).toBe('READY');

    // The share is gone without a report: the next heartbeat says so.
    expect((await emitAck(worker, 'worker:heartbeat', { activeRuns: 1, shares: [] })).ok).toBe(true);
    const failed = (await sessions(runId)).find((s) => s.id === start.sessionId)!;
    expect(failed).toMatchObject({ status: 'ERROR', errorMessage: expect.stringContaining('no longer running') });
    const audit = await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events?action=session.error`);
    expect(audit.body.events).toHaveLength(1);

    // The worker still lists a share the hub has ended: it is told to stop it.
    expect((await emitAck(worker, 'worker:heartbeat', { activeRuns: 1, shares: [start.sessionId] })).ok).toBe(true);
    await eventually('share:stop pushed', async () => stops.find((s) => s.sessionId === start.sessionId));
    await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });
});
