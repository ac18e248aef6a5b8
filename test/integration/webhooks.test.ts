import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type { AuditEvent, WebhookDelivery } from '@handoff/shared';
import { api, emitAck, eventually, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { downPort, startReceiver, verifySignature as verify, type WebhookReceiver } from '../support/webhook-receiver.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

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
      // Each event was queued with the audit row of its change (migration 0012): its id is that row's.
      const audit = (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events?limit=1000`)).body.events as AuditEvent[];
      const actionOf = new Map(audit.map((e) => [e.id, e.action]));
      expect(Object.fromEntries(got.map((r) => [r.event, actionOf.get(r.body.id)]))).toEqual({
        'session.grace': 'session.grace', 'run.needs_operator': 'run.needs-operator', 'approval.requested': 'handoff.requested', 'approval.resolved': 'handoff.approved',
        'takeover.started': 'control.takeover', 'takeover.ended': 'control.handback', 'run.finished': 'run.cancel',
      });
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

  it('receiver down for 10 s: retried with backoff, delivered once it is back, one successful delivery per idempotency key; Slack format', async () => {
    const port = await downPort(); // nothing listens there for the first 10 s
    const { endpoint, secret } = await register(`http://127.0.0.1:${port}/hook`, ['run.finished'], 'slack');
    const downSince = Date.now();
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
    await new Promise((r) => setTimeout(r, Math.max(0, 10_000 - (Date.now() - downSince))));
    const whileDown = await deliveries(endpoint.id);
    expect(whileDown.every((x) => x.status === 'pending' || x.status === 'delivering')).toBe(true);
    const attemptsWhileDown = Math.min(...whileDown.map((x) => x.attempts));
    const receiver = await startReceiver({ port });
    const downForMs = Date.now() - downSince;
    try {
      const recorded = await eventually('delivered after the receiver came back', async () => {
        const d = await deliveries(endpoint.id);
        return d.length === 2 && d.every((x) => x.status === 'succeeded') ? d : undefined;
      }, 30_000);
      await new Promise((r) => setTimeout(r, 1000)); // nothing more arrives
      expect(downForMs).toBeGreaterThanOrEqual(10_000);
      expect(receiver.got).toHaveLength(2);
      expect(new Set(receiver.got.map((r) => r.delivery))).toEqual(new Set(recorded.map((d) => d.id)));
      for (const r of receiver.got) {
        expect(verify(secret, r.signature, r.raw)).toBe(true);
        expect(r.body).toEqual({ text: expect.stringMatching(/^\[run\.finished\] run [0-9a-f-]{36} \(\/runs\/[0-9a-f-]{36}\) finished: (succeeded|failed)/) });
      }
      expect(receiver.got.map((r) => r.body.text).join('\n')).toContain(runIds[1]);
      // Backoff: a handful of attempts over the 10 s (300 ms doubling), not one per poll.
      expect(attemptsWhileDown).toBeGreaterThanOrEqual(3);
      expect(recorded.every((d) => d.attempts > attemptsWhileDown && d.attempts <= 10)).toBe(true);
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
  }, 180_000); // PGlite runs every migration in-process at start: slow on a loaded machine

  it('two hub nodes on one database, both enqueueing and polling: every event delivered once', async () => {
    const second = await startTestHub({ databaseUrl: hub.db!.url, env });
    const receiver = await startReceiver({ delayMs: 300 }); // slow answers: each node's pass is busy while the other's runs
    try {
      const { endpoint, secret } = await register(receiver.url, ['run.finished']);
      const nodes = [hub.url, second.url];
      const runIds: string[] = [];
      for (let i = 0; i < 12; i++) {
        const res = await api(nodes[i % 2]!, alice, 'POST', '/api/task-runs', { command: { script: 'sleep 60' }, liveSession: false });
        expect(res.status).toBe(201);
        runIds.push(res.body.id as string);
      }
      // Cancelled through both nodes in turn: each node queues events and kicks its own pass.
      const cancels = runIds.map(async (id, i) => {
        await new Promise((r) => setTimeout(r, i * 80));
        // STATE_CONFLICT when the scheduler assigned the run meanwhile: retried, as the error says.
        return eventually(`run ${i} cancelled`, async () => {
          const res = await api(nodes[i % 2]!, alice, 'POST', `/api/task-runs/${id}/cancel`, {});
          return res.status === 409 ? undefined : res;
        });
      });
      for (const c of await Promise.all(cancels)) expect(c.status).toBe(200);
      await eventually('all delivered', async () => {
        const d = await deliveries(endpoint.id);
        return d.length === runIds.length && d.every((x) => x.status === 'succeeded') ? d : undefined;
      }, 30_000);
      await new Promise((r) => setTimeout(r, 1000));
      expect(receiver.got.map((r) => r.body.runId).sort()).toEqual([...runIds].sort());
      expect(new Set(receiver.got.map((r) => r.delivery)).size).toBe(receiver.got.length);
      for (const r of receiver.got) expect(verify(secret, r.signature, r.raw)).toBe(true);
      // Both nodes delivered (the race for the queue happened), and between them each delivery was attempted exactly once.
      const attempts = (logs: string) => logs.split('\n').filter((l) => l.includes('"webhook delivered"') && l.includes(endpoint.id)).length;
      const [byFirst, bySecond] = [attempts(hub.logs()), attempts(second.logs())];
      expect(byFirst).toBeGreaterThan(0);
      expect(bySecond).toBeGreaterThan(0);
      expect(byFirst + bySecond).toBe(runIds.length);
      expect((await deliveries(endpoint.id)).every((d) => d.attempts === 1)).toBe(true);
      await api(hub.url, admin, 'DELETE', `/api/webhooks/${endpoint.id}`);
    } finally {
      await receiver.close();
      await second.close();
    }
  });

  // Removing an endpoint: no attempt is made to it once DELETE has returned. With
  // WEBHOOK_RETRY_BASE 300 ms (next_attempt_at runs on the database's clock, not the hub's, so
  // real time it is), 4 s is several retry intervals: a delivery put back to `pending` would
  // have been retried. (Events of runs other tests left behind may reach these receivers too:
  // the checks are about this test's deliveries, and about what arrives after the removal.)
  const SEVERAL_RETRIES_MS = 4000;
  /** Waits several retry intervals: no request reaches the receiver after `since` (ms epoch). */
  const nothingArrivesAfter = async (receiver: WebhookReceiver, since: number) => {
    await new Promise((r) => setTimeout(r, SEVERAL_RETRIES_MS));
    expect(receiver.got.filter((r) => r.at >= since).map((r) => r.delivery)).toEqual([]);
  };
  const deliveryOf = async (endpointId: string, id: string) => (await deliveries(endpointId)).find((d) => d.id === id);

  it('endpoint removed while an attempt is in flight: a failed attempt ends the delivery failed ("endpoint removed"), never retried; a successful one is recorded delivered', async () => {
    // A worker of its own: the runs earlier tests left running may hold the shared worker's slots.
    const spare = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`wh-rm-${randomBytes(3).toString('hex')}`) });
    onTestFinished(() => spare.stop());
    // Both endpoints hold the request open: the attempts are in flight when the endpoints are removed.
    const failing = await startReceiver({ hold: true, status: 500 });
    const answering = await startReceiver({ hold: true });
    try {
      const a = await register(failing.url, ['run.finished']);
      const b = await register(answering.url, ['run.finished']);
      const runId = await finishedRun();
      const [toA, toB] = await eventually('both attempts at their receivers', async () => {
        const got = [failing.got.find((r) => r.body.runId === runId), answering.got.find((r) => r.body.runId === runId)];
        return got[0] && got[1] ? ([got[0], got[1]] as const) : undefined;
      }, 45_000);
      expect(await deliveryOf(a.endpoint.id, toA.delivery)).toMatchObject({ status: 'delivering', attempts: 1 });
      expect(await deliveryOf(b.endpoint.id, toB.delivery)).toMatchObject({ status: 'delivering', attempts: 1 });

      expect((await api(hub.url, admin, 'DELETE', `/api/webhooks/${a.endpoint.id}`)).status).toBe(200);
      expect((await api(hub.url, admin, 'DELETE', `/api/webhooks/${b.endpoint.id}`)).status).toBe(200);
      const removedAt = Date.now();
      failing.release(); // the attempt in flight fails: HTTP 500
      answering.release(); // this one succeeds: it was sent, so it is delivered

      const settled = async (endpointId: string, id: string) => eventually(`the delivery ${id} settled`, async () => {
        const d = await deliveryOf(endpointId, id);
        return d && d.status !== 'delivering' ? d : undefined;
      });
      expect(await settled(a.endpoint.id, toA.delivery)).toMatchObject({ status: 'failed', attempts: 1, lastError: 'endpoint removed', lastStatusCode: 500, nextAttemptAt: null, deliveredAt: null });
      expect(await settled(b.endpoint.id, toB.delivery)).toMatchObject({ status: 'succeeded', attempts: 1, lastError: null, lastStatusCode: 204, deliveredAt: expect.any(String) });
      expect(toB.answered).toBe(true);

      // Never attempted again: not retried, so not signed anew with the removed endpoint's secret.
      await Promise.all([nothingArrivesAfter(failing, removedAt), nothingArrivesAfter(answering, removedAt)]);
      expect(failing.got.filter((r) => r.delivery === toA.delivery)).toHaveLength(1);
      expect(await deliveryOf(a.endpoint.id, toA.delivery)).toMatchObject({ status: 'failed', attempts: 1, lastError: 'endpoint removed' });
      expect(await deliveryOf(b.endpoint.id, toB.delivery)).toMatchObject({ status: 'succeeded', attempts: 1 });
      expect(hub.logs()).toContain('"webhook delivery ended: endpoint removed"');
    } finally {
      await failing.close();
      await answering.close();
    }
  });

  it('a removed endpoint\'s deliveries still due (queued by a change racing the removal, or claimed by a node that died) are ended by the claim, never sent; a claim racing the removal\'s transaction waits it out', async () => {
    const receiver = await startReceiver();
    const sql = new pg.Client({ connectionString: hub.db!.url });
    await sql.connect();
    try {
      const { endpoint } = await register(receiver.url, ['run.finished']);
      /** A delivery row as the trigger writes it, committed on `client`; `delivering` with a lapsed claim is one whose node died mid-attempt. */
      const queue = async (client: pg.Client, status: 'pending' | 'delivering'): Promise<string> => {
        const id = randomUUID();
        const payload = { id: randomUUID(), event: 'run.finished', at: new Date().toISOString(), runId: null, data: { title: 't', status: 'succeeded', exitCode: 0 } };
        await client.query(
          `insert into webhook_deliveries (id, endpoint_id, event_id, event, dedupe_key, payload, status, attempts, claimed_until)
           values ($1, $2, $3, 'run.finished', $4, $5, $6::text, $7, case when $6::text = 'delivering' then now() - interval '1 second' end)`,
          [id, endpoint.id, payload.id, `run.finished:${id}`, JSON.stringify(payload), status, status === 'delivering' ? 1 : 0],
        );
        return id;
      };
      const ended = (ids: string[]) => eventually('ended as endpoint removed', async () => {
        const d = await deliveries(endpoint.id);
        return ids.every((id) => d.some((x) => x.id === id && x.status === 'failed' && x.lastError === 'endpoint removed')) ? d : undefined;
      }, 10_000);

      // 1. The removal's transaction (DELETE's two statements) is open, the endpoint row updated but not committed, while a
      // node's claim lapses: the hub's claims (every 200 ms) neither send it nor end it yet.
      await sql.query('begin');
      await sql.query(`update webhook_endpoints set deleted_at = now() where id = $1 and deleted_at is null`, [endpoint.id]);
      await sql.query(`update webhook_deliveries set status = 'failed', last_error = 'endpoint removed', claimed_until = null where endpoint_id = $1 and status = 'pending'`, [endpoint.id]);
      const other = new pg.Client({ connectionString: hub.db!.url });
      await other.connect();
      const lapsed = await queue(other, 'delivering').finally(() => other.end()); // committed: visible to the hub's claims, unlike the removal
      await new Promise((r) => setTimeout(r, 1500));
      expect(receiver.got.filter((r) => r.delivery === lapsed)).toEqual([]);
      expect(await deliveryOf(endpoint.id, lapsed)).toMatchObject({ status: 'delivering', attempts: 1 });
      await sql.query('commit');
      const removedAt = Date.now();
      await ended([lapsed]);

      // 2. After the removal: a delivery a racing change queued (pending) and one a node that
      // died left mid-attempt (its claim lapsed) are ended by the next claim, not attempted.
      const late = [await queue(sql, 'pending'), await queue(sql, 'delivering')];
      const d = await ended(late);
      expect(d.filter((x) => late.includes(x.id)).map((x) => x.attempts).sort()).toEqual([0, 1]);
      await nothingArrivesAfter(receiver, removedAt);
      expect(receiver.got.filter((r) => r.delivery === lapsed || late.includes(r.delivery))).toEqual([]);
    } finally {
      await sql.end();
      await receiver.close();
    }
  });

  // Last: it takes every node of this database down.
  it('pending deliveries survive the hub: every node stopped, a new one delivers them', async () => {
    const port = await downPort();
    const { endpoint } = await register(`http://127.0.0.1:${port}/hook`, ['run.finished']);
    // A worker of its own: the runs earlier tests left running may hold the shared worker's slots.
    const spare = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`wh-spare-${randomBytes(3).toString('hex')}`) });
    onTestFinished(() => spare.stop());
    const runId = await finishedRun();
    await eventually('an attempt failed', async () => (await deliveries(endpoint.id)).find((d) => d.attempts >= 1 && d.lastError), 45_000); // the run's end and a first attempt, under the suite's load
    await hub.close(); // drained: the database and its queue stay
    const fresh = await startTestHub({ databaseUrl: hub.db!.url, env });
    const receiver = await startReceiver({ port });
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

describe('outbound webhooks: the approval chain of a custom policy (approved, denied, expired by the sweeper)', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'handoff-wh-policy-'));
  const policyFile = path.join(dir, 'policy.json');
  // Runs labelled needs=review wait for another operator's approval; other runs are free.
  writeFileSync(policyFile, JSON.stringify({
    version: 1,
    rules: [
      { id: 'review', actions: ['run.create'], roles: ['operator'], runLabels: { needs: 'review' }, effect: 'approve', approverRoles: ['operator'] },
      { id: 'ops-create', actions: ['run.create'], roles: ['operator'], effect: 'allow' },
    ],
  }));
  let hub: TestHub;

  beforeAll(async () => {
    hub = await startTestHub({ env: { HANDOFF_POLICY: policyFile, APPROVAL_TIMEOUT: '2s', SWEEP_INTERVAL: '100ms', WEBHOOK_POLL_INTERVAL: '200ms' } });
  });
  afterAll(async () => {
    await hub?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('approval.requested and approval.resolved for each outcome, signed, the expiry included', async () => {
    const [admin, alice, bob] = [await hub.token('admin'), await hub.token('operator'), await hub.token('operator')];
    const receiver = await startReceiver();
    try {
      const created = await api(hub.url, admin, 'POST', '/api/webhooks', { url: receiver.url, events: ['approval.requested', 'approval.resolved'] });
      expect(created.status).toBe(201);
      const ask = async () => {
        const res = await api(hub.url, alice, 'POST', '/api/task-runs', { command: { script: 'true' }, labels: { needs: 'review' }, liveSession: false });
        expect(res.status).toBe(202);
        return res.body.error.details.approvalId as string;
      };
      const [approved, denied, expired] = [await ask(), await ask(), await ask()];
      expect((await api(hub.url, bob, 'POST', `/api/approvals/${approved}/approve`, { reason: 'fine' })).status).toBe(200);
      expect((await api(hub.url, bob, 'POST', `/api/approvals/${denied}/deny`, { reason: 'not now' })).status).toBe(200);
      const got = await eventually('six events', async () => (receiver.got.length >= 6 ? receiver.got : undefined), 20_000);
      await new Promise((r) => setTimeout(r, 1000)); // nothing more arrives
      expect(receiver.got).toHaveLength(6);
      for (const r of got) expect(verify(created.body.secret, r.signature, r.raw), r.event).toBe(true);
      const of = (event: string, id: string) => got.filter((r) => r.event === event && r.body.data.approvalId === id).map((r) => r.body);
      for (const id of [approved, denied, expired]) {
        expect(of('approval.requested', id)).toEqual([
          { id: expect.any(String), event: 'approval.requested', at: expect.any(String), runId: null, data: { approvalId: id, action: 'run.create', requester: expect.stringMatching(/^operator-/), approverRoles: ['operator'], expiresAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/) } },
        ]);
      }
      expect(of('approval.resolved', approved).map((b) => b.data)).toEqual([{ approvalId: approved, action: 'run.create', requester: expect.any(String), status: 'approved', resolvedBy: expect.stringMatching(/^operator-/), reason: 'fine' }]);
      expect(of('approval.resolved', denied).map((b) => b.data)).toEqual([{ approvalId: denied, action: 'run.create', requester: expect.any(String), status: 'denied', resolvedBy: expect.stringMatching(/^operator-/), reason: 'not now' }]);
      expect(of('approval.resolved', expired).map((b) => b.data)).toEqual([{ approvalId: expired, action: 'run.create', requester: expect.any(String), status: 'expired', resolvedBy: null, reason: 'no decision within APPROVAL_TIMEOUT' }]);
    } finally {
      await receiver.close();
    }
  });
});
