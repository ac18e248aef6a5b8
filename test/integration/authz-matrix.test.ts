import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiRoutes } from '@handoff/shared';
import { em } from '../../server/src/infra/db/orm.js';
import { api, connect, emitAck, eventually } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';

type Who = 'none' | 'observer' | 'operator' | 'admin' | 'worker';
const WHO: Who[] = ['none', 'observer', 'operator', 'admin', 'worker'];
// The exact status each principal gets. Past authentication, role and policy, a command on a
// fresh queued run has its own outcome, asserted too (a 500 must never pass as "allowed"):
// no session yet → 404 for its GET and extend, 409 for revoke / grant-write / revoke-write
// (nothing READY to act on); control on a queued run and a dismiss with nothing raised → 409;
// an approval id that does not exist → 404.
type Outcome = 200 | 201 | 202 | 401 | 403 | 404 | 409;
// Codes of the refusals, so a 403 from another cause (or a 404/409 by accident) cannot pass.
const CODE: Partial<Record<Outcome, string[]>> = { 202: ['APPROVAL_REQUIRED'], 401: ['UNAUTHENTICATED'], 403: ['FORBIDDEN', 'POLICY_DENIED'], 404: ['NOT_FOUND'], 409: ['STATE_CONFLICT'] };

describe('authorization matrix: every route × (no token, observer, operator, admin, worker)', () => {
  let hub: TestHub;
  const tokens: Partial<Record<Who, string>> = {};
  let userId = '';

  beforeAll(async () => {
    hub = await startTestHub();
    for (const role of ['observer', 'operator', 'admin'] as const) tokens[role] = await hub.token(role);
    tokens.worker = await hub.workerToken('matrix-worker');
    userId = (await api(hub.url, tokens.operator!, 'GET', '/api/auth/whoami')).body.id;
  });
  afterAll(async () => {
    await hub?.stop();
  });

  const freshRun = async () => (await api(hub.url, tokens.admin!, 'POST', '/api/task-runs', { command: { script: 'true' } })).body.id as string;
  const uuid = '01a1fc84-556c-72b6-8c34-8b8d9e28c380';

  // [method, path (RUN = a fresh queued run per call), body, expected per principal]
  const table: Array<[string, string, unknown, Record<Who, Outcome>]> = [
    ['GET', '/api/task-runs', undefined, { none: 401, observer: 200, operator: 200, admin: 200, worker: 403 }],
    ['GET', '/api/task-runs?q=x&status=running,queued&control=agent&needsOperator=true&share=any', undefined, { none: 401, observer: 200, operator: 200, admin: 200, worker: 403 }],
    ['POST', '/api/task-runs', { command: { script: 'true' } }, { none: 401, observer: 403, operator: 201, admin: 201, worker: 403 }],
    ['GET', '/api/task-runs/RUN', undefined, { none: 401, observer: 200, operator: 200, admin: 200, worker: 403 }],
    ['POST', '/api/task-runs/RUN/cancel', {}, { none: 401, observer: 403, operator: 200, admin: 200, worker: 403 }],
    ['POST', '/api/task-runs/RUN/live-session', {}, { none: 401, observer: 403, operator: 201, admin: 201, worker: 403 }],
    ['GET', '/api/task-runs/RUN/live-session', undefined, { none: 401, observer: 404, operator: 404, admin: 404, worker: 403 }],
    ['GET', '/api/task-runs/RUN/live-sessions', undefined, { none: 401, observer: 200, operator: 200, admin: 200, worker: 403 }],
    ['POST', '/api/task-runs/RUN/live-session/extend', { ttlMinutes: 5 }, { none: 401, observer: 403, operator: 404, admin: 404, worker: 403 }],
    ['POST', '/api/task-runs/RUN/live-session/revoke', {}, { none: 401, observer: 403, operator: 409, admin: 409, worker: 403 }],
    ['GET', '/api/task-runs/RUN/events', undefined, { none: 401, observer: 200, operator: 200, admin: 200, worker: 403 }],
    ['GET', '/api/task-runs/RUN/events/verify', undefined, { none: 401, observer: 200, operator: 200, admin: 200, worker: 403 }],
    ['GET', '/api/task-runs/RUN/recording.cast', undefined, { none: 401, observer: 200, operator: 200, admin: 200, worker: 403 }],
    ['GET', '/api/approvals', undefined, { none: 401, observer: 403, operator: 200, admin: 200, worker: 403 }],
    ['POST', `/api/approvals/${uuid}/approve`, {}, { none: 401, observer: 403, operator: 404, admin: 404, worker: 403 }],
    ['POST', `/api/approvals/${uuid}/deny`, {}, { none: 401, observer: 403, operator: 404, admin: 404, worker: 403 }],
    ['POST', '/api/task-runs/RUN/control', { action: 'pause' }, { none: 401, observer: 403, operator: 409, admin: 409, worker: 403 }],
    ['POST', '/api/task-runs/RUN/control', { action: 'takeover' }, { none: 401, observer: 403, operator: 409, admin: 409, worker: 403 }],
    // An observer may ask for write access: by default the request waits for an operator's approval.
    ['POST', '/api/task-runs/RUN/live-session/grant-write', {}, { none: 401, observer: 202, operator: 409, admin: 409, worker: 403 }],
    // Nobody watches a fresh run: a kick finds no one (observers may not kick at all).
    ['POST', '/api/task-runs/RUN/viewers/kick', { userId: uuid }, { none: 401, observer: 403, operator: 404, admin: 404, worker: 403 }],
    ['POST', '/api/task-runs/RUN/live-session/revoke-write', {}, { none: 401, observer: 403, operator: 409, admin: 409, worker: 403 }],
    ['POST', '/api/task-runs/RUN/operator-messages', { message: 'hi' }, { none: 401, observer: 403, operator: 201, admin: 201, worker: 403 }],
    ['GET', '/api/task-runs/RUN/operator-messages', undefined, { none: 401, observer: 200, operator: 200, admin: 200, worker: 403 }],
    ['POST', '/api/task-runs/RUN/needs-operator/dismiss', {}, { none: 401, observer: 403, operator: 409, admin: 409, worker: 403 }],
    ['GET', '/api/auth/whoami', undefined, { none: 401, observer: 200, operator: 200, admin: 200, worker: 200 }],
    // Only a grantee may reveal a grant: on a fresh run nobody holds one, admins included.
    ['GET', '/api/task-runs/RUN/live-session/write-grant', undefined, { none: 401, observer: 403, operator: 403, admin: 403, worker: 403 }],
    ['GET', '/api/users/USER/tokens', undefined, { none: 401, observer: 403, operator: 403, admin: 200, worker: 403 }],
    // A token id nobody has: admins get as far as the lookup.
    ['DELETE', `/api/tokens/${uuid}`, undefined, { none: 401, observer: 403, operator: 403, admin: 404, worker: 403 }],
    ['POST', '/api/webhooks', { url: 'http://127.0.0.1:9/hook', events: ['run.finished'] }, { none: 401, observer: 403, operator: 403, admin: 201, worker: 403 }],
    ['GET', '/api/webhooks', undefined, { none: 401, observer: 403, operator: 403, admin: 200, worker: 403 }],
    ['DELETE', `/api/webhooks/${uuid}`, undefined, { none: 401, observer: 403, operator: 403, admin: 404, worker: 403 }],
    ['GET', `/api/webhooks/${uuid}/deliveries`, undefined, { none: 401, observer: 403, operator: 403, admin: 404, worker: 403 }],
  ];

  it('the table covers every authenticated route of apiRoutes', () => {
    const covered = new Set(table.map(([method, path]) => `${method.toLowerCase()} ${path.replace('RUN', '{id}').replace('USER', '{id}').replace(uuid, '{id}')}`));
    const missing = apiRoutes.filter((r) => r.path.startsWith('/api/') && r.auth !== 'public').map((r) => `${r.method} ${r.path}`).filter((k) => !covered.has(k));
    expect(missing).toEqual([]);
  });

  for (const [method, path, body, expected] of table) {
    it(`${method} ${path}`, async () => {
      for (const who of WHO) {
        const target = path.includes('RUN') ? path.replace('RUN', await freshRun()) : path.replace('USER', userId);
        const res = await api(hub.url, who === 'none' ? null : tokens[who]!, method, target, body);
        const want = expected[who];
        expect(res.status, `${who} → ${res.status} ${JSON.stringify(res.body?.error)}`).toBe(want);
        const codes = CODE[want];
        if (codes) expect(codes, `${who}`).toContain(res.body.error.code);
        else expect(res.body?.error, `${who}`).toBeUndefined();
      }
    });
  }

  it('sockets: /dashboard for users only, /worker for workers only', async () => {
    for (const who of WHO) {
      for (const ns of ['/dashboard', '/worker']) {
        const allowed = who !== 'none' && (ns === '/worker') === (who === 'worker');
        const result = await connect(hub.url, ns, who === 'none' ? undefined : tokens[who]).then(
          (s) => (s.close(), 'ok'),
          (err: Error & { data?: { code: string } }) => err.data?.code,
        );
        expect(result, `${who} on ${ns}`).toBe(allowed ? 'ok' : who === 'none' ? 'UNAUTHENTICATED' : 'FORBIDDEN');
      }
    }
  });

  it('a worker cannot act for a run that is not its own: FORBIDDEN for each report, told to stop it, and audited once per run and connection', async () => {
    const runId = await freshRun();
    // Another worker's run (so the scheduler cannot hand it to this one meanwhile).
    const { worker: other } = await hub.auth.issueWorkerToken('matrix-other-worker');
    await em(hub.orm).execute(`update runs set status = 'running', worker_id = ? where id = ?`, [other.id, runId]);
    const socket = await connect(hub.url, '/worker', tokens.worker);
    const cancels: string[] = [];
    socket.on('run:cancel', ({ runId: id }: { runId: string }) => cancels.push(id));
    expect((await emitAck(socket, 'worker:hello', { capacity: 1, runs: [], version: 't' })).ok).toBe(true);
    for (const [event, payload] of [
      ['run:started', { runId }],
      ['run:output', { runId, frames: [{ seq: 1, t: 0, data: 'forged output' }] }],
      ['run:exited', { runId, exitCode: 0 }],
    ] as const) {
      expect(await emitAck(socket, event, payload), event).toMatchObject({ ok: false, error: { code: 'FORBIDDEN' } });
    }
    await eventually('run:cancel for each refused report', async () => cancels.length === 3);
    expect(cancels).toEqual([runId, runId, runId]);
    socket.close();
    // Audited, but a repeating worker does not flood the run's chain: once per run and connection.
    const rows = await em(hub.orm).execute<{ action: string; result: string; metadata: { attempted: string } }[]>('select action, result, metadata from audit_events where run_id = ? and action = ?', [runId, 'worker.forbidden']);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ result: 'denied', metadata: { attempted: 'run:started' } });
    expect((await api(hub.url, tokens.admin!, 'GET', `/api/task-runs/${runId}`)).body).toMatchObject({ status: 'running', workerId: other.id });
    expect((await hub.terminal.scrollback(runId, 0)).frames).toEqual([]);
  });
});
