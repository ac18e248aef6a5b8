import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WebhookDelivery } from '@handoff/shared';
import { api, emitAck, eventually, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

interface Received {
  event: string;
  delivery: string;
  signature: string;
  raw: string;
  body: Record<string, any>;
  at: number;
}

/** A plain HTTP receiver that records every POST (raw body and headers); `delayMs` slows its answers. */
async function startReceiver(port = 0, delayMs = 0): Promise<{ url: string; port: number; got: Received[]; close(): Promise<void> }> {
  const got: Received[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      got.push({ event: String(req.headers['x-handoff-event']), delivery: String(req.headers['x-handoff-delivery']), signature: String(req.headers['x-handoff-signature']), raw, body: JSON.parse(raw), at: Date.now() });
      setTimeout(() => res.writeHead(204).end(), delayMs);
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const actual = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${actual}/hook`,
    port: actual,
    got,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** The documented check (docs/webhooks.md): HMAC-SHA256 of "<t>.<raw body>", and t within the replay window. */
function verify(secret: string, header: string, raw: string, windowS = 300): boolean {
  const parts = Object.fromEntries(header.split(',').map((p) => p.split('=', 2) as [string, string]));
  const t = Number(parts.t);
  if (!Number.isInteger(t) || Math.abs(Date.now() / 1000 - t) > windowS || !parts.v1) return false;
  const expected = createHmac('sha256', secret).update(`${t}.${raw}`).digest();
  const given = Buffer.from(parts.v1, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

const ALL = ['run.needs_operator', 'approval.requested', 'approval.resolved', 'session.grace', 'run.finished', 'takeover.started', 'takeover.ended'];

describe('outbound webhooks: real hubs, worker, tmux and an HTTP receiver', () => {
  const secretKey = randomBytes(32).toString('hex'); // shared by both hub nodes, as in production
  // LIVE_GRACE past the session TTL: every new live session gets its grace warning at once (session.grace).
  const env = { LIVE_GRACE: '2h', SWEEP_INTERVAL: '100ms', PAUSE_SOFT_GRACE: '3s', WEBHOOK_RETRY_BASE: '300ms', WEBHOOK_POLL_INTERVAL: '200ms', WEBHOOK_TIMEOUT: '2s', HANDOFF_SECRET_KEY: secretKey };
  let hub: TestHub;
  let worker: WorkerProcess;
  let admin: string;
  let alice: string;
  let observer: Viewer;

  beforeAll(async () => {
    hub = await startTestHub({ env });
    admin = await hub.token('admin');
    alice = await hub.token('operator');
    observer = await Viewer.connect(hub.url, await hub.token('observer'));
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`wh-${randomBytes(3).toString('hex')}`), capacity: 4 });
  });
  afterAll(async () => {
    observer?.close();
    await worker?.stop();
    await hub?.stop();
  });

  const register = async (url: string, events: string[], format?: 'json' | 'slack') => {
    const res = await api(hub.url, admin, 'POST', '/api/webhooks', { url, events, description: 'test', ...(format ? { format } : {}) });
    expect(res.status).toBe(201);
    return res.body as { endpoint: { id: string }; secret: string };
  };
  const deliveries = async (id: string) => (await api(hub.url, admin, 'GET', `/api/webhooks/${id}/deliveries`)).body.deliveries as WebhookDelivery[];
  const finishedRun = async (script = 'true') => {
    const res = await api(hub.url, alice, 'POST', '/api/task-runs', { command: { script }, liveSession: false });
    expect(res.status).toBe(201);
    return res.body.id as string;
  };

  it('signed deliveries for session grace, needs-operator, approval requested/resolved, takeover started/ended and run finished; admin-only; the secret shown once', async () => {
    const receiver = await startReceiver();
    try {
      expect((await api(hub.url, alice, 'POST', '/api/webhooks', { url: receiver.url, events: ALL })).status).toBe(403);
      expect((await api(hub.url, admin, 'POST', '/api/webhooks', { url: 'ftp://x', events: ALL })).status).toBe(400);
      const { endpoint, secret } = await register(receiver.url, ALL);
      expect(secret).toMatch(/^whsec_/);
      const listed = await api(hub.url, admin, 'GET', '/api/webhooks');
      expect(listed.body.endpoints).toEqual([expect.objectContaining({ id: endpoint.id, url: receiver.url, events: ALL, format: 'json' })]);
      expect(JSON.stringify(listed.body)).not.toContain(secret);

      const created = await api(hub.url, alice, 'POST', '/api/task-runs', { command: { script: 'handoff-agent request-operator "stuck on the migration"; while true; do handoff-agent checkpoint; sleep 0.2; done' } });
      const runId = created.body.id as string;
      await emitAck(observer.socket, 'run:subscribe', { runId });
      await observer.until('web session READY', () => observer.runs.get(runId)?.sessions.some((s) => s.provider === 'web' && s.status === 'READY'));
      await observer.until('needs-operator', () => observer.runs.get(runId)?.needsOperator);
      // A long takeover needs an admin's approval (default policy): requested, then resolved.
      const asked = await api(hub.url, alice, 'POST', `/api/task-runs/${runId}/control`, { action: 'takeover', ttlMinutes: 60 });
      expect(asked.status).toBe(202);
      expect((await api(hub.url, admin, 'POST', `/api/approvals/${asked.body.error.details.approvalId}/approve`, { reason: 'ok' })).body.status).toBe('approved');
      await observer.until('taken over', () => observer.runs.get(runId)?.control.state === 'operator');
      expect((await api(hub.url, alice, 'POST', `/api/task-runs/${runId}/control`, { action: 'handback', summary: 'fixed it' })).status).toBe(200);
      await observer.until('handed back', () => observer.runs.get(runId)?.control.state === 'agent');
      await api(hub.url, alice, 'POST', `/api/task-runs/${runId}/cancel`, {});

      const wanted = ['session.grace', 'run.needs_operator', 'approval.requested', 'approval.resolved', 'takeover.started', 'takeover.ended', 'run.finished'];
      const got = await eventually('every event delivered', async () => {
        const ofRun = receiver.got.filter((r) => r.body.runId === runId);
        return wanted.every((e) => ofRun.some((r) => r.event === e)) ? ofRun : undefined;
      }, 20_000);
      for (const r of got) {
        expect(verify(secret, r.signature, r.raw), `signature of ${r.event}`).toBe(true);
        expect(verify('whsec_wrong', r.signature, r.raw)).toBe(false);
        expect(r.body).toMatchObject({ event: r.event, runId, id: expect.any(String), at: expect.any(String) });
      }
      const by = (e: string) => got.find((r) => r.event === e)!.body.data;
      expect(by('run.needs_operator')).toEqual({ reason: 'stuck on the migration' });
      expect(by('approval.requested')).toMatchObject({ action: 'takeover', requester: expect.stringMatching(/^operator-/) });
      expect(by('approval.resolved')).toMatchObject({ action: 'takeover', status: 'approved', resolvedBy: expect.stringMatching(/^admin-/) });
      expect(by('takeover.started')).toMatchObject({ by: expect.stringMatching(/^operator-/) });
      expect(by('takeover.ended')).toMatchObject({ summary: 'fixed it' });
      expect(by('run.finished')).toMatchObject({ status: 'cancelled' });
      expect(by('session.grace')).toMatchObject({ provider: 'web', expiresAt: expect.any(String) });
      // Each event once, however many pushes repeated it (a finished run is updated more than once).
      expect(new Set(got.map((r) => r.event)).size).toBe(got.length);
      // The receiver answers before the hub records the success: wait for the record.
      await eventually('recorded as delivered', async () => {
        const recorded = (await deliveries(endpoint.id)).filter((d) => wanted.includes(d.event));
        return recorded.length === wanted.length && recorded.every((d) => d.status === 'succeeded');
      });
      const recorded = await deliveries(endpoint.id);
      expect(recorded.filter((d) => wanted.includes(d.event)).every((d) => d.attempts === 1 && d.lastStatusCode === 204)).toBe(true);
      expect(hub.logs()).not.toContain(secret);

      expect((await api(hub.url, admin, 'DELETE', `/api/webhooks/${endpoint.id}`)).status).toBe(200);
      expect((await api(hub.url, admin, 'GET', '/api/webhooks')).body.endpoints).toEqual([]);
    } finally {
      await receiver.close();
    }
  });

  it('receiver down for a few seconds: retried with backoff, delivered once it is back, one successful delivery per idempotency key; Slack format', async () => {
    // A port that nothing listens on (yet).
    const probe = await startReceiver();
    const port = probe.port;
    await probe.close();
    const { endpoint, secret } = await register(`http://127.0.0.1:${port}/hook`, ['run.finished'], 'slack');
    const runIds = [await finishedRun(), await finishedRun('exit 3')];
    let last: unknown;
    await eventually('failed attempts recorded', async () => {
      const d = await deliveries(endpoint.id);
      // `pending` between attempts (`delivering` during one): never succeeded, retried, the error kept.
      last = d;
      return d.length === 2 && d.every((x) => x.status !== 'succeeded' && x.status !== 'failed' && x.attempts >= 2 && x.lastError?.includes('fetch failed')) ? d : undefined;
    }, 20_000).catch((err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify(last)}`);
    });
    await new Promise((r) => setTimeout(r, 2000));
    const receiver = await startReceiver(port);
    try {
      const recorded = await eventually('delivered after the receiver came back', async () => {
        const d = await deliveries(endpoint.id);
        return d.length === 2 && d.every((x) => x.status === 'succeeded') ? d : undefined;
      }, 20_000);
      await new Promise((r) => setTimeout(r, 1000)); // nothing more arrives
      expect(receiver.got).toHaveLength(2);
      expect(new Set(receiver.got.map((r) => r.delivery))).toEqual(new Set(recorded.map((d) => d.id)));
      for (const r of receiver.got) {
        expect(verify(secret, r.signature, r.raw)).toBe(true);
        expect(r.body).toEqual({ text: expect.stringMatching(/^\[run\.finished\] run [0-9a-f-]{36} \(\/runs\/[0-9a-f-]{36}\) finished: (succeeded|failed)/) });
      }
      expect(receiver.got.map((r) => r.body.text).join('\n')).toContain(runIds[1]);
      expect(recorded.every((d) => d.attempts >= 3)).toBe(true);
    } finally {
      await receiver.close();
    }
    await api(hub.url, admin, 'DELETE', `/api/webhooks/${endpoint.id}`);
  });

  it('embedded PGlite (the default database): the same queue delivers', async () => {
    const embedded = await startTestHub({ driver: 'pglite', env });
    const receiver = await startReceiver();
    try {
      const root = await embedded.token('admin');
      const created = await api(embedded.url, root, 'POST', '/api/webhooks', { url: receiver.url, events: ['run.finished'] });
      expect(created.status).toBe(201);
      // No worker: the run stays queued, and cancelling it finishes it.
      const run = await api(embedded.url, root, 'POST', '/api/task-runs', { command: { script: 'true' }, liveSession: false });
      expect((await api(embedded.url, root, 'POST', `/api/task-runs/${run.body.id}/cancel`, {})).status).toBe(200);
      const got = await eventually('delivered', async () => receiver.got[0], 10_000);
      expect(got.body).toMatchObject({ event: 'run.finished', runId: run.body.id, data: { status: 'cancelled' } });
      expect(verify(created.body.secret, got.signature, got.raw)).toBe(true);
    } finally {
      await receiver.close();
      await embedded.stop();
    }
  });

  it('two hub nodes on one database: every event delivered once', async () => {
    const second = await startTestHub({ databaseUrl: hub.db!.url, env });
    const receiver = await startReceiver(0, 100); // slow answers: the nodes' passes overlap
    try {
      const { endpoint } = await register(receiver.url, ['run.finished']);
      const runIds = await Promise.all(Array.from({ length: 8 }, () => finishedRun()));
      await eventually('all delivered', async () => {
        const d = await deliveries(endpoint.id);
        return d.length === runIds.length && d.every((x) => x.status === 'succeeded') ? d : undefined;
      }, 30_000);
      await new Promise((r) => setTimeout(r, 1000));
      expect(receiver.got.map((r) => r.body.runId).sort()).toEqual([...runIds].sort());
      expect(new Set(receiver.got.map((r) => r.delivery)).size).toBe(receiver.got.length);
      // Both nodes poll the same queue; between them, each delivery was attempted exactly once.
      const attempts = (logs: string) => logs.split('\n').filter((l) => l.includes('"webhook delivered"') && l.includes(endpoint.id)).length;
      expect(attempts(hub.logs()) + attempts(second.logs())).toBe(runIds.length);
      await api(hub.url, admin, 'DELETE', `/api/webhooks/${endpoint.id}`);
    } finally {
      await receiver.close();
      await second.close();
    }
  });

  // Last: it takes every node of this database down.
  it('pending deliveries survive the hub: every node stopped, a new one delivers them', async () => {
    const probe = await startReceiver();
    const port = probe.port;
    await probe.close();
    const { endpoint } = await register(`http://127.0.0.1:${port}/hook`, ['run.finished']);
    const runId = await finishedRun();
    await eventually('an attempt failed', async () => (await deliveries(endpoint.id)).find((d) => d.attempts >= 1 && d.lastError));
    await hub.close(); // drained: the database and its queue stay
    const fresh = await startTestHub({ databaseUrl: hub.db!.url, env });
    const receiver = await startReceiver(port);
    try {
      const got = await eventually('delivered by the new node', async () => receiver.got[0], 20_000);
      expect(got.body).toMatchObject({ event: 'run.finished', runId });
      // Recorded as delivered, by the new node (the old one is gone).
      await eventually('recorded as succeeded', async () => (await api(fresh.url, admin, 'GET', `/api/webhooks/${endpoint.id}/deliveries`)).body.deliveries[0]?.status === 'succeeded');
      expect(fresh.logs()).toContain('"webhook delivered"');
    } finally {
      await receiver.close();
      await fresh.close();
    }
  });
});
