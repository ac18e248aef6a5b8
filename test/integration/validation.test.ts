import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Socket } from 'socket.io-client';
import { api, connect, emitAck } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';

const hostile = [
  undefined, null, 42, 'text', [], true,
  { __proto__: { admin: true } }, JSON.parse('{"__proto__":{"polluted":1}}'), { constructor: { prototype: { x: 1 } } },
  { runId: 'not-a-uuid' }, { runId: 123 }, { runId: 'x'.repeat(100_000) }, { runId: '\u0000\u202e' },
];

describe('malformed input is refused with VALIDATION and changes nothing', () => {
  let hub: TestHub;
  let operator: string;
  let workerToken: string;

  beforeAll(async () => {
    hub = await startTestHub();
    operator = await hub.token('operator');
    workerToken = await hub.workerToken('validation-worker');
  });
  afterAll(async () => {
    await hub?.stop();
  });

  it('REST: POST /task-runs bodies', async () => {
    const bad: unknown[] = [
      {}, { command: 'ls' }, { command: {} }, { command: { argv: [] } }, { command: { argv: [''] } },
      { command: { script: '' } }, { command: { script: 'x', argv: ['y'] } }, { command: { script: 1 } },
      { command: { script: 'x' }, cwd: 'relative' }, { command: { script: 'x' }, env: { 'BAD NAME': 'v' } },
      { command: { script: 'x' }, env: { A: 1 } }, { command: { script: 'x' }, labels: { UPPER: 'v' } },
      { command: { script: 'x' }, title: '' }, { command: { script: 'x' }, title: 'x'.repeat(201) },
      { command: { script: 'x' }, liveSession: 'yes' }, { command: { script: 'x' }, extra: 1 },
      { command: { script: 'x'.repeat(70_000) } }, JSON.parse('{"command":{"script":"x"},"__proto__":{"role":"admin"}}'),
      [], 'plain', null,
    ];
    for (const body of bad) {
      const res = await api(hub.url, operator, 'POST', '/api/task-runs', body === null ? 'null' : body);
      expect(res.status, JSON.stringify(body)?.slice(0, 80)).toBe(400);
      expect(res.body.error.code).toBe('VALIDATION');
      expect(typeof res.body.error.message).toBe('string');
    }
    const notJson = await api(hub.url, operator, 'POST', '/api/task-runs', '{"command":');
    expect(notJson.body.error).toEqual({ code: 'VALIDATION', message: 'request body is not valid JSON' });
    const tooBig = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'x' }, title: 'y'.repeat(300_000) });
    expect(tooBig.body.error.code).toBe('VALIDATION');
    expect((await api(hub.url, operator, 'GET', '/api/task-runs')).body.runs).toEqual([]);
  });

  it('REST: query, path and cancel body', async () => {
    for (const q of ['status=nope', 'limit=0', 'limit=1000', 'limit=abc', 'cursor=%%%', 'other=1']) {
      const res = await api(hub.url, operator, 'GET', `/api/task-runs?${q}`);
      expect(res.status, q).toBe(400);
      expect(res.body.error.code).toBe('VALIDATION');
    }
    for (const id of ['123', 'not-a-uuid', '%2e%2e%2fetc', 'a'.repeat(300)]) {
      const res = await api(hub.url, operator, 'GET', `/api/task-runs/${id}`);
      expect(res.status, id).toBe(400);
    }
    const missing = await api(hub.url, operator, 'GET', '/api/task-runs/01a1fc84-556c-72b6-8c34-8b8d9e28c380');
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe('NOT_FOUND');
    const run = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'true' } });
    const cancel = await api(hub.url, operator, 'POST', `/api/task-runs/${run.body.id}/cancel`, { reason: 5 });
    expect(cancel.body.error.code).toBe('VALIDATION');
    expect((await api(hub.url, operator, 'GET', `/api/task-runs/${run.body.id}`)).body.status).toBe('queued');
    await api(hub.url, operator, 'POST', `/api/task-runs/${run.body.id}/cancel`, {});
  });

  async function expectRefused(socket: Socket, event: string, payloads: unknown[], valid: unknown): Promise<void> {
    for (const p of payloads) {
      const ack = p === undefined ? await emitAck(socket, event) : await emitAck(socket, event, p);
      expect(ack.ok, `${event} ${JSON.stringify(p)?.slice(0, 60)}`).toBe(false);
      if (!ack.ok) expect(ack.error.code).toBe('VALIDATION');
    }
    // The connection survived and still works.
    expect(socket.connected).toBe(true);
    const good = await emitAck(socket, event, valid);
    expect(good.ok).toBe(true);
  }

  it('dashboard socket events', async () => {
    const run = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'true' } });
    const socket = await connect(hub.url, '/dashboard', operator);
    const runId = run.body.id as string;
    for (const event of ['run:subscribe', 'run:unsubscribe', 'term:unsubscribe']) {
      await expectRefused(socket, event, hostile, { runId });
    }
    await expectRefused(socket, 'term:subscribe', [...hostile, { runId, afterSeq: -1 }, { runId, afterSeq: 'x' }, { runId, extra: 1 }], { runId });
    await expectRefused(socket, 'runs:subscribe', [{ x: 1 }, 5, 'a'], {});
    socket.close();
  });

  it('worker socket events', async () => {
    const socket = await connect(hub.url, '/worker', workerToken);
    await expectRefused(socket, 'worker:hello', [...hostile, { capacity: 0, runs: [], version: '1' }, { capacity: 1, runs: ['x'], version: '1' }], { capacity: 1, runs: [], version: 'test' });
    await expectRefused(socket, 'worker:heartbeat', [{ activeRuns: -1 }, { activeRuns: 'a' }, null], { activeRuns: 0 });
    const runId = '01a1fc84-556c-72b6-8c34-8b8d9e28c380';
    const badFrames = [
      ...hostile, { runId, frames: [] }, { runId, frames: [{ seq: 0, t: 0, data: 'x' }] },
      { runId, frames: [{ seq: 1, t: -1, data: 'x' }] }, { runId, frames: [{ seq: 1, t: 0, data: 'x'.repeat(300_000) }] },
      { runId, frames: [{ seq: 1, t: 0, data: 5 }] },
    ];
    for (const p of badFrames) {
      const ack = await emitAck(socket, 'run:output', p);
      expect(ack.ok).toBe(false);
      if (!ack.ok) expect(ack.error.code).toBe('VALIDATION');
    }
    for (const event of ['run:started', 'run:exited']) {
      for (const p of [...hostile, { runId, exitCode: 'x' }]) {
        const ack = await emitAck(socket, event, p);
        expect(ack.ok).toBe(false);
        if (!ack.ok) expect(ack.error.code).toBe('VALIDATION');
      }
    }
    // Well-formed, but for a run that isn't this worker's: refused, nothing changes.
    const run = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'true' } });
    const forbidden = await emitAck(socket, 'run:exited', { runId: run.body.id, exitCode: 0 });
    expect(forbidden).toMatchObject({ ok: false, error: { code: 'FORBIDDEN' } });
    expect(socket.connected).toBe(true);
    socket.close();
  });
});
