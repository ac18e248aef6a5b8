import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WebhookDelivery } from '@handoff/shared';
import { api, eventually } from '../support/clients.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startHubProcess, tokenIssuer, type HubProcess, type TokenIssuer } from '../support/hub-process.js';
import { startReceiver, verifySignature, type WebhookReceiver } from '../support/webhook-receiver.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

// A real hub process (real worker, tmux, PostgreSQL) SIGKILLed in the window the old design
// lost events in: the state change committed, its webhook not delivered yet. The endpoint is a
// receiver that holds requests unanswered, so nothing is delivered before the kill.
/** The audit table (to be renamed audit_events): named once here. */
const AUDIT_TABLE = 'audit_events';
const ENV = { WEBHOOK_POLL_INTERVAL: '200ms', WEBHOOK_TIMEOUT: '2s', WEBHOOK_RETRY_BASE: '300ms', HEARTBEAT_INTERVAL: '500ms', LOG_LEVEL: 'info' };

interface QueuedRow {
  id: string;
  status: string;
  attempts: number;
}

describe('chaos: a hub node SIGKILLed right after a state change commits still delivers its webhook, once', () => {
  let db: TestDatabase;
  let tokens: TokenIssuer;
  let sql: pg.Client;
  let hub: HubProcess | undefined;
  let worker: WorkerProcess | undefined;
  let receiver: WebhookReceiver | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    tokens = await tokenIssuer(db.url); // runs the migrations before the hub starts
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
  });
  afterAll(async () => {
    await worker?.stop();
    await hub?.stop();
    await receiver?.close();
    await sql?.end();
    await tokens?.close();
    await db?.drop();
  });

  /** The queued deliveries of one event, read straight from the database (what survives the node). */
  const queued = async (endpointId: string, event: string) =>
    (await sql.query<QueuedRow>(`select id, status, attempts from webhook_deliveries where endpoint_id = $1 and event = $2`, [endpointId, event])).rows;

  /** SIGKILLs the hub the moment `hit()` holds (checked every few ms), and returns what held then. */
  const killWhen = async <T>(what: string, hit: () => Promise<T | undefined>): Promise<T> => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const seen = await hit();
      if (seen) {
        hub!.proc.kill('SIGKILL');
        return seen;
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 2));
    }
  };

  it('killed with the event queued but unanswered (needs-operator), then mid-POST (takeover): after each restart one successful delivery per idempotency key', async () => {
    receiver = await startReceiver({ hold: true });
    hub = await startHubProcess({ databaseUrl: db.url, env: ENV, startTimeoutMs: 90_000 }); // a loaded machine starts slowly
    const admin = await tokens.token('admin');
    const operator = await tokens.token('operator');
    const created = await api(hub.url, admin, 'POST', '/api/webhooks', { url: receiver.url, events: ['run.needs_operator', 'takeover.started'] });
    expect(created.status).toBe(201);
    const { endpoint, secret } = created.body as { endpoint: { id: string }; secret: string };
    const deliveries = async () => (await api(hub!.url, admin, 'GET', `/api/webhooks/${endpoint.id}/deliveries`)).body.deliveries as WebhookDelivery[];
    worker = startWorker({ hubUrl: hub.url, token: await tokens.workerToken(`whcrash-${randomBytes(3).toString('hex')}`) });

    // 1. Killed as soon as the needs-operator change (and so its delivery row) is committed.
    const reason = `crash window ${randomBytes(3).toString('hex')}`;
    const run = await api(hub.url, operator, 'POST', '/api/task-runs', {
      command: { script: `sleep 1; handoff-agent request-operator "${reason}"; while true; do handoff-agent checkpoint; sleep 0.2; done` },
    });
    expect(run.status, JSON.stringify(run.body)).toBe(201);
    const runId = run.body.id as string;
    // Killed the moment the change is visible (committed): an enqueue after the commit would race this kill.
    await killWhen('the needs-operator change committed', async () => {
      const { rows } = await sql.query<{ needs_operator_reason: string | null }>(`select needs_operator_reason from runs where id = $1`, [runId]);
      return rows[0]?.needs_operator_reason === reason || undefined;
    });
    const answeredAtKill = receiver.answered().length;
    const arrivedAtKill = receiver.got.length;
    expect((await hub.exited()).signal).toBe('SIGKILL');
    // The window: the change committed with its delivery row, nothing answered, nothing recorded as delivered.
    const [row, ...more] = await queued(endpoint.id, 'run.needs_operator');
    expect(more).toEqual([]);
    expect(['pending', 'delivering']).toContain(row?.status);
    expect(answeredAtKill).toBe(0);
    expect(hub.output()).not.toContain('"webhook delivered"');
    console.info(`webhook crash 1: killed with the delivery ${row!.status} after ${row!.attempts} attempt(s); ${arrivedAtKill} request(s) had reached the receiver, unanswered`);

    receiver.release();
    await hub.restart();
    const first = await eventually('the needs-operator event delivered by the restarted node', async () => {
      const d = (await deliveries()).filter((x) => x.event === 'run.needs_operator');
      return d.length === 1 && d[0]!.status === 'succeeded' ? d[0]! : undefined;
    }, 30_000);
    expect(first.id).toBe(row!.id);
    const got1 = receiver.answered().filter((r) => r.event === 'run.needs_operator');
    expect(got1.map((r) => r.delivery)).toEqual([first.id]);
    expect(verifySignature(secret, got1[0]!.signature, got1[0]!.raw)).toBe(true);
    expect(got1[0]!.body).toMatchObject({ event: 'run.needs_operator', runId, data: { reason } });
    // The worker resent the request the dead node never acked: still one occurrence, audited once.
    const audited = await sql.query<{ id: string }>(`select id from ${AUDIT_TABLE} where run_id = $1 and action = 'run.needs-operator'`, [runId]);
    expect(audited.rows.map((r) => r.id)).toEqual([got1[0]!.body.id]);

    // 2. Killed mid-POST: the request reached the endpoint, which has not answered yet.
    receiver.hold = true;
    await eventually('the worker back on the restarted node', async () => (await api(hub!.url, operator, 'GET', `/api/task-runs/${runId}`)).body.status === 'running');
    const taking = api(hub.url, operator, 'POST', `/api/task-runs/${runId}/control`, { action: 'takeover', ttlMinutes: 5 }).catch((err: unknown) => err);
    const inFlight = await killWhen('the takeover POST at the receiver', async () => receiver!.got.find((r) => r.event === 'takeover.started'));
    expect((await hub.exited()).signal).toBe('SIGKILL');
    await taking;
    const [claimed] = await queued(endpoint.id, 'takeover.started');
    const control = await sql.query<{ control_state: string }>(`select control_state from runs where id = $1`, [runId]);
    expect(control.rows[0]!.control_state).toBe('operator');
    expect(claimed).toMatchObject({ id: inFlight.delivery, status: 'delivering', attempts: 1 });
    expect(receiver.answered().filter((r) => r.event === 'takeover.started')).toEqual([]);

    receiver.release();
    await hub.restart();
    // The dead node's claim lapses (3× WEBHOOK_TIMEOUT); the new node sends it again, under the same key.
    const second = await eventually('the takeover event delivered after the claim lapsed', async () => {
      const d = (await deliveries()).filter((x) => x.event === 'takeover.started');
      return d.length === 1 && d[0]!.status === 'succeeded' ? d[0]! : undefined;
    }, 30_000);
    expect(second).toMatchObject({ id: inFlight.delivery, attempts: 2, lastStatusCode: 204 });
    await new Promise((r) => setTimeout(r, 1000)); // nothing more arrives
    const sent = receiver.got.filter((r) => r.event === 'takeover.started');
    expect(sent.map((r) => r.delivery)).toEqual([second.id, second.id]); // at least once: the same idempotency key twice…
    expect(sent.filter((r) => r.answered)).toHaveLength(1); // …answered once
    for (const r of sent) expect(verifySignature(secret, r.signature, r.raw)).toBe(true);
    expect(sent[1]!.raw).toBe(sent[0]!.raw); // the same event, byte for byte; only the signature's t is fresh
    // Every needs-operator delivery answered is its own event: one audit row each, one success
    // per idempotency key (a request the agent repeats after the takeover cleared the flag is a
    // new occurrence, and may arrive as the worker resends what the killed node never acked).
    const answeredNeeds = receiver.answered().filter((r) => r.event === 'run.needs_operator');
    const neededRows = (await sql.query<{ id: string }>(`select id from ${AUDIT_TABLE} where run_id = $1 and action = 'run.needs-operator' order by seq`, [runId])).rows.map((r) => r.id);
    expect(answeredNeeds.map((r) => r.delivery)).toEqual([...new Set(answeredNeeds.map((r) => r.delivery))]);
    expect(answeredNeeds.map((r) => r.body.id)).toEqual(neededRows);
    expect(answeredNeeds[0]!.delivery).toBe(first.id);
  }, 240_000);
});
