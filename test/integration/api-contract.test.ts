import { randomBytes, randomUUID } from 'node:crypto';
import type { Express } from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiRoutes, expressPath } from '@handoff/shared';
import { api, emitAck, eventually, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { ContractChecker } from '../support/openapi.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

type Layer = { route?: { path: string; methods: Record<string, boolean> }; rawPath?: unknown; handle: { stack?: Layer[] } };

/** Every `METHOD /path` the Express app serves, with mount paths joined (`:id` style). */
function expressRoutes(app: Express): string[] {
  const out: string[] = [];
  const walk = (stack: Layer[], prefix: string) => {
    for (const layer of stack) {
      if (layer.route) {
        if (typeof layer.route.path !== 'string') continue; // the dashboard's SPA fallback (a RegExp), not an API route
        for (const m of Object.keys(layer.route.methods)) if (m !== '_all') out.push(`${m.toUpperCase()} ${(prefix + layer.route.path).replace(/(.)\/$/, '$1')}`);
      } else if (layer.handle.stack) {
        walk(layer.handle.stack, prefix + (typeof layer.rawPath === 'string' && layer.rawPath !== '/' ? layer.rawPath : ''));
      }
    }
  };
  walk((app as unknown as { router: { stack: Layer[] } }).router.stack, '');
  return [...new Set(out)].sort();
}

describe('REST contract: the OpenAPI document is the API', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let admin: string;
  let alice: string;
  let observerToken: string;
  let viewer: Viewer;
  const contract = new ContractChecker();
  const call = (token: string | null, method: string, path: string, body?: unknown, headers?: Record<string, string>) => contract.call(hub.url, token, method, path, body, headers);

  beforeAll(async () => {
    hub = await startTestHub({ env: { SWEEP_INTERVAL: '100ms', PAUSE_SOFT_GRACE: '1s', HANDOFF_METRICS_TOKEN: 'metrics-token-0123456789' } });
    admin = await hub.token('admin');
    alice = await hub.token('operator');
    observerToken = await hub.token('observer');
    viewer = await Viewer.connect(hub.url, observerToken);
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`api-${randomBytes(3).toString('hex')}`), capacity: 2 });
  });
  afterAll(async () => {
    viewer?.close();
    await worker?.stop();
    await hub?.stop();
  });

  it('every Express route is documented, and every documented route exists', () => {
    // socket.io adds its own request listener; the Express app is the one with a router.
    const app = hub.http.listeners('request').find((l) => 'router' in l) as unknown as Express;
    const served = expressRoutes(app);
    const documented = apiRoutes.map((r) => `${r.method.toUpperCase()} ${expressPath(r.path)}`).sort();
    expect(served).toEqual(documented);
  });

  it('serves the document and its rendering without a token', async () => {
    const doc = await call(null, 'GET', '/api/openapi.json');
    expect(doc.status).toBe(200);
    expect(doc.body.openapi).toBe('3.1.0');
    expect(Object.keys(doc.body.paths)).toContain('/api/task-runs/{id}/control');
    const html = await call(null, 'GET', '/api/docs');
    expect(html.status).toBe(200);
    expect(html.headers.get('content-type')).toMatch(/^text\/html/);
    expect(html.body).toContain('/api/task-runs/{id}/live-session/grant-write');
    expect(html.body).not.toMatch(/<script[^>]+src=|https?:\/\/(?!x)/); // self-contained: no CDN
  });

  it('every response of a representative flow matches the schema declared for its route and status', async () => {
    expect((await call(null, 'GET', '/healthz')).status).toBe(200);
    expect((await call(null, 'GET', '/readyz')).status).toBe(200);
    expect((await call(null, 'GET', '/api/audit/public-key')).status).toBe(200); // public: it reveals nothing
    expect((await call(null, 'GET', '/api/auth/whoami')).status).toBe(401);
    expect((await call(alice, 'GET', '/api/auth/whoami')).status).toBe(200);
    expect((await call(alice, 'POST', '/api/task-runs', { command: {} })).status).toBe(400);
    expect((await call(observerToken, 'POST', '/api/task-runs', { command: { script: 'true' } })).status).toBe(403);

    const created = await call(alice, 'POST', '/api/task-runs', { command: { script: 'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.2; done' }, title: 'contract' });
    expect(created.status).toBe(201);
    const runId = created.body.id as string;
    await emitAck(viewer.socket, 'run:subscribe', { runId });
    await viewer.untilStatus(runId, ['running']);
    await viewer.until('web share READY', () => viewer.runs.get(runId)?.sessions.some((s) => s.provider === 'web' && s.status === 'READY'));
    const applied = (seq: number) => viewer.until(`control seq ${seq} applied`, () => (viewer.runs.get(runId)?.control.appliedSeq ?? 0) >= seq);

    expect((await call(alice, 'GET', '/api/task-runs?limit=5')).status).toBe(200);
    expect((await call(alice, 'GET', '/api/task-runs?limit=0')).status).toBe(400);
    expect((await call(alice, 'GET', `/api/task-runs/${runId}`)).status).toBe(200);
    expect((await call(alice, 'GET', `/api/task-runs/${randomUUID()}`)).status).toBe(404);
    expect((await call(alice, 'GET', '/api/task-runs/not-a-uuid')).status).toBe(400);
    // An unknown route is not in the document, but still answers the error envelope.
    expect(await api(hub.url, alice, 'GET', '/api/no-such-route')).toMatchObject({ status: 404, body: { error: { code: 'NOT_FOUND' } } });

    expect((await call(alice, 'GET', `/api/task-runs/${runId}/live-session`)).status).toBe(200);
    expect((await call(alice, 'GET', `/api/task-runs/${runId}/live-sessions`)).status).toBe(200);
    expect((await call(alice, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'web' })).status).toBe(200);
    expect((await call(alice, 'POST', `/api/task-runs/${runId}/live-session/extend`, { ttlMinutes: 30 })).status).toBe(200);

    expect((await call(alice, 'POST', `/api/task-runs/${runId}/control`, { action: 'pause', mode: 'hard' })).status).toBe(200);
    await applied(1);
    expect((await call(alice, 'POST', `/api/task-runs/${runId}/control`, { action: 'pause' })).status).toBe(409);
    expect((await call(alice, 'POST', `/api/task-runs/${runId}/control`, { action: 'resume' })).status).toBe(200);
    await applied(2);
    expect((await call(alice, 'POST', `/api/task-runs/${runId}/control`, { action: 'takeover', mode: 'hard', ttlMinutes: 5 })).status).toBe(200);
    await applied(3);
    expect((await call(alice, 'POST', `/api/task-runs/${runId}/live-session/grant-write`, {})).status).toBe(200);
    expect((await call(alice, 'GET', `/api/task-runs/${runId}/live-session/write-grant`)).status).toBe(200);
    expect((await call(alice, 'POST', `/api/task-runs/${runId}/control`, { action: 'handback', summary: 'done' })).status).toBe(200);
    await applied(4);
    // After the hand-back there is no live grant any more.
    expect([200, 404, 409]).toContain((await call(alice, 'POST', `/api/task-runs/${runId}/live-session/revoke-write`, {})).status);
    expect([403, 404, 409]).toContain((await call(alice, 'GET', `/api/task-runs/${runId}/live-session/write-grant`)).status);

    expect((await call(alice, 'POST', `/api/task-runs/${runId}/operator-messages`, { message: 'hello agent' })).status).toBe(201);
    expect((await call(alice, 'POST', `/api/task-runs/${runId}/operator-messages`, { message: '' })).status).toBe(400);
    expect((await call(observerToken, 'GET', `/api/task-runs/${runId}/operator-messages`)).status).toBe(200);
    expect([200, 409]).toContain((await call(alice, 'POST', `/api/task-runs/${runId}/needs-operator/dismiss`)).status);

    // A second observer opens the run; an operator kicks exactly them (the first viewer keeps watching).
    const bystanderToken = await hub.token('observer');
    const bystanderId = (await call(bystanderToken, 'GET', '/api/auth/whoami')).body.id as string;
    const bystander = await Viewer.connect(hub.url, bystanderToken);
    expect((await emitAck(bystander.socket, 'run:subscribe', { runId })).ok).toBe(true);
    const kicked = await call(alice, 'POST', `/api/task-runs/${runId}/viewers/kick`, { userId: bystanderId, reason: 'contract test' });
    expect(kicked.status).toBe(200);
    expect(kicked.body).toMatchObject({ kicked: { userId: bystanderId }, connectionsCut: 1, grantRevoked: false });
    expect((await emitAck(bystander.socket, 'run:subscribe', { runId })).ok).toBe(false);
    bystander.close();
    expect((await call(alice, 'POST', `/api/task-runs/${runId}/viewers/kick`, { userId: randomUUID() })).status).toBe(404);
    expect((await call(alice, 'POST', `/api/task-runs/${runId}/viewers/kick`, { userId: 'nobody' })).status).toBe(400);

    expect((await call(admin, 'GET', `/api/task-runs/${runId}/events?limit=3`)).status).toBe(200);
    const jsonl = await call(admin, 'GET', `/api/task-runs/${runId}/events?format=jsonl`);
    expect(jsonl.status).toBe(200);
    expect(String(jsonl.body).trim().split('\n').length).toBeGreaterThan(3);
    expect((await call(admin, 'GET', `/api/task-runs/${runId}/events/verify`)).status).toBe(200);
    await eventually('some recorded output', async () => String((await call(alice, 'GET', `/api/task-runs/${runId}/recording.cast`)).body).includes('tick'));

    expect((await call(alice, 'GET', '/api/approvals')).status).toBe(200);
    expect((await call(observerToken, 'GET', '/api/approvals')).status).toBe(403);
    expect((await call(admin, 'POST', `/api/approvals/${randomUUID()}/approve`, {})).status).toBe(404);
    expect((await call(admin, 'POST', `/api/approvals/${randomUUID()}/deny`, {})).status).toBe(404);

    expect((await call(alice, 'POST', `/api/task-runs/${runId}/live-session/revoke`, { reason: 'contract test' })).status).toBe(200);
    expect((await call(alice, 'POST', `/api/task-runs/${runId}/cancel`, { reason: 'contract test' })).status).toBe(200);
    await viewer.untilStatus(runId, ['cancelled']);
    expect((await call(alice, 'POST', `/api/task-runs/${runId}/control`, { action: 'pause' })).status).toBe(409);

    expect((await call(null, 'GET', '/metrics')).status).toBe(401);
    expect((await call(alice, 'GET', '/metrics')).status).toBe(403);
    expect((await call(admin, 'GET', '/metrics')).status).toBe(200);
    expect((await call('metrics-token-0123456789', 'GET', '/metrics')).status).toBe(200);

    const hook = await call(admin, 'POST', '/api/webhooks', { url: 'http://127.0.0.1:9/hook', events: ['run.finished'] });
    expect(hook.status).toBe(201);
    expect((await call(alice, 'POST', '/api/webhooks', { url: 'http://127.0.0.1:9/hook', events: ['run.finished'] })).status).toBe(403);
    expect((await call(admin, 'GET', '/api/webhooks')).status).toBe(200);
    expect((await call(admin, 'GET', `/api/webhooks/${hook.body.endpoint.id}/deliveries`)).status).toBe(200);
    expect((await call(admin, 'DELETE', `/api/webhooks/${hook.body.endpoint.id}`)).status).toBe(200);
    expect((await call(admin, 'DELETE', `/api/webhooks/${hook.body.endpoint.id}`)).status).toBe(404);
    // Token lifecycle (admin): list a user's tokens, revoke one; errors too.
    const bob = await hub.auth.addUser(`contract-bob-${randomUUID().slice(0, 6)}`, 'operator');
    const listed = await call(admin, 'GET', `/api/users/${bob.user.id}/tokens`);
    expect(listed.status).toBe(200);
    expect((await call(alice, 'GET', `/api/users/${bob.user.id}/tokens`)).status).toBe(403);
    expect((await call(admin, 'GET', `/api/users/${randomUUID()}/tokens`)).status).toBe(404);
    expect((await call(admin, 'DELETE', `/api/tokens/${listed.body.tokens[0].id}`)).status).toBe(200);
    expect((await call(admin, 'DELETE', `/api/tokens/${listed.body.tokens[0].id}`)).status).toBe(409);
    expect((await call(admin, 'DELETE', '/api/tokens/not-a-uuid')).status).toBe(400);

    expect(contract.failures).toEqual([]);
    // The flow touched every documented operation.
    const ops = new Set([...contract.called].map((c) => c.split(' ')[0]));
    expect(apiRoutes.map((r) => r.operationId).filter((id) => !ops.has(id))).toEqual([]);
  });

  it('X-Request-Id: a safe one is echoed, anything else replaced; the access log names the request, the user and the audit correlation id', async () => {
    const mine = `req-${randomBytes(4).toString('hex')}`;
    const res = await call(alice, 'GET', '/api/auth/whoami', undefined, { 'x-request-id': mine });
    expect(res.headers.get('x-request-id')).toBe(mine);
    const hostile = await call(alice, 'GET', '/api/auth/whoami', undefined, { 'x-request-id': 'a b<script>' });
    expect(hostile.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const long = await call(null, 'GET', '/healthz', undefined, { 'x-request-id': 'x'.repeat(65) });
    expect(long.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect((await call(null, 'GET', '/api/task-runs')).headers.get('x-request-id')).toBeTruthy(); // errors carry it too

    const cmdId = `cmd-${randomBytes(4).toString('hex')}`;
    const run = await call(alice, 'POST', '/api/task-runs', { command: { script: 'echo hi' } }, { 'x-request-id': cmdId });
    expect(run.status).toBe(201);
    const whoami = (await call(alice, 'GET', '/api/auth/whoami')).body as { id: string };
    const lines = () => hub.logs().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>);
    const line = await eventually('access log line', async () => lines().find((l) => l.req?.id === cmdId && l.res));
    expect(line).toMatchObject({ module: 'http', userId: whoami.id, res: { statusCode: 201 }, req: { method: 'POST', url: '/api/task-runs' } });
    expect(line.correlationId).toMatch(/^[0-9a-f-]{36}$/);
    // No headers (tokens, cookies) in access lines.
    expect(hub.logs()).not.toContain(alice);
    expect(lines().filter((l) => l.module === 'http').every((l) => !l.req?.headers)).toBe(true);
  });
});
