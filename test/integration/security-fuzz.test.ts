import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { em } from '../../server/src/db/orm.js';
import { api, connect, emitAck } from '../support/clients.js';
import { hostilePayloads } from '../support/fuzz.js';
import { startTestHub, type TestHub } from '../support/hub.js';

const PER_TARGET = 200;

describe('fuzz: every REST route and socket event refuses hostile payloads', () => {
  let hub: TestHub;
  let admin: string;
  let workerToken: string;
  let runId: string;
  let tried = 0;

  beforeAll(async () => {
    // Limits high enough that the fuzzer measures validation, not the rate limiter.
    hub = await startTestHub({ env: { RATE_LIMIT_REST_BURST: '100000', RATE_LIMIT_REST_PER_SEC: '100000', RATE_LIMIT_SOCKET_BURST: '100000', RATE_LIMIT_SOCKET_PER_SEC: '100000' } });
    admin = await hub.token('admin');
    workerToken = await hub.workerToken('fuzz-worker');
    runId = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'true' } })).body.id;
  });
  afterAll(async () => {
    console.log(`fuzz: ${tried} hostile payloads tried, every one refused`);
    await hub?.stop();
  });

  const snapshot = async () =>
    (await em(hub.orm).execute<{ t: string; n: number }[]>(
      `select 'runs' t, count(*)::int n from runs union all select 'sessions', count(*)::int from live_sessions
       union all select 'audit', count(*)::int from control_events union all select 'approvals', count(*)::int from approvals
       union all select 'messages', count(*)::int from operator_messages union all select 'grants', count(*)::int from write_grants union all select 'users', count(*)::int from users union all select 'tokens', count(*)::int from api_tokens`,
    )).map((r) => `${r.t}=${r.n}`).join(' ');

  const routes: Array<[string, string, Record<string, unknown>]> = [
    ['POST', '/api/task-runs', { command: { script: 'true' }, title: 't' }],
    ['POST', `/api/task-runs/RUN/cancel`, { reason: 'r' }],
    ['POST', `/api/task-runs/RUN/live-session`, { provider: 'web', ttlMinutes: 5 }],
    ['POST', `/api/task-runs/RUN/live-session/extend`, { ttlMinutes: 5 }],
    ['POST', `/api/task-runs/RUN/live-session/revoke`, { reason: 'r' }],
    ['POST', `/api/task-runs/RUN/control`, { action: 'pause', mode: 'soft' }],
    ['POST', `/api/task-runs/RUN/control`, { action: 'handback', summary: 'done' }],
    ['POST', `/api/task-runs/RUN/live-session/grant-write`, { ttlMinutes: 5 }],
    ['POST', `/api/task-runs/RUN/live-session/revoke-write`, { grantId: '01a1fc84-556c-72b6-8c34-8b8d9e28c380' }],
    ['POST', `/api/task-runs/RUN/operator-messages`, { message: 'hello' }],
    ['POST', `/api/approvals/01a1fc84-556c-72b6-8c34-8b8d9e28c380/approve`, { reason: 'r' }],
    ['POST', `/api/approvals/01a1fc84-556c-72b6-8c34-8b8d9e28c380/deny`, { reason: 'r' }],
  ];

  for (const [method, template, base] of routes) {
    it(`${method} ${template}`, async () => {
      const before = await snapshot();
      for (const payload of hostilePayloads(base, PER_TARGET, template.length)) {
        const res = await api(hub.url, admin, method, template.replace('RUN', runId), JSON.stringify(payload) ?? 'null');
        tried++;
        expect(res.status, JSON.stringify(payload)?.slice(0, 100)).toBeGreaterThanOrEqual(400);
        expect(res.status).toBeLessThan(500);
        expect(res.body.error.code).toBeTypeOf('string');
      }
      expect(await snapshot()).toBe(before);
      expect((await api(hub.url, admin, 'GET', `/api/task-runs/${runId}`)).status).toBe(200);
    });
  }

  it('GET query strings and path params', async () => {
    const before = await snapshot();
    const bad = ['status=%00', 'limit=-1', 'limit=1e9', 'cursor=' + 'A'.repeat(5000), '__proto__[x]=1', 'status[]=queued', 'limit[$gt]=0'];
    for (let i = 0; i < PER_TARGET; i++) {
      for (const path of [`/api/task-runs?${bad[i % bad.length]}&n${i}=1`, `/api/task-runs/${encodeURIComponent(`x${i}\u0000`)}`, `/api/task-runs/${runId}/events?limit=${-i}`, `/api/approvals?status=${i}`]) {
        const res = await api(hub.url, admin, 'GET', path);
        tried++;
        expect(res.status, path).toBeGreaterThanOrEqual(400);
        expect(res.status).toBeLessThan(500);
      }
    }
    expect(await snapshot()).toBe(before);
  });

  const dashboardEvents: Array<[string, Record<string, unknown>]> = [
    ['runs:subscribe', {}], ['run:subscribe', { runId: 'RUN' }], ['run:unsubscribe', { runId: 'RUN' }],
    ['term:subscribe', { runId: 'RUN', afterSeq: 0 }], ['term:unsubscribe', { runId: 'RUN' }], ['approvals:subscribe', {}],
    ['term:input', { runId: 'RUN', data: 'ls\r' }],
  ];
  const workerEvents: Array<[string, Record<string, unknown>]> = [
    ['worker:hello', { capacity: 1, runs: [], version: '1' }], ['worker:heartbeat', { activeRuns: 0, shares: [] }],
    ['run:started', { runId: 'RUN' }], ['run:output', { runId: 'RUN', frames: [{ seq: 1, t: 0, data: 'x' }] }],
    ['run:exited', { runId: 'RUN', exitCode: 0 }], ['share:ready', { sessionId: 'RUN', attachRo: {}, attachRw: {} }],
    ['share:failed', { sessionId: 'RUN', message: 'm' }],
    ['control:applied', { runId: 'RUN', seq: 1, effective: 'agent', appliedAt: 1, handoff: { cwd: '/tmp', env: {}, scrollbackSeq: 1 } }], ['run:needs-operator', { runId: 'RUN', reason: 'r' }],
  ];

  for (const [ns, table] of [['/dashboard', dashboardEvents], ['/worker', workerEvents]] as const) {
    it(`socket ${ns}: every event`, async () => {
      const socket = await connect(hub.url, ns, ns === '/dashboard' ? admin : workerToken);
      const before = await snapshot();
      for (const [event, rawBase] of table) {
        const base = JSON.parse(JSON.stringify(rawBase).replaceAll('RUN', runId));
        for (const payload of hostilePayloads(base, PER_TARGET, event.length * 7)) {
          const ack = await emitAck(socket, event, payload);
          tried++;
          expect(ack.ok, `${event} ${JSON.stringify(payload)?.slice(0, 80)}`).toBe(false);
        }
        expect(socket.connected, event).toBe(true);
      }
      expect(await snapshot()).toBe(before);
      socket.close();
    });
  }
});
