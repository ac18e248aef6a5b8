import { createHmac, randomBytes } from 'node:crypto';
import { AppError, ErrorCode, type CreateWebhookBody, type WebhookDelivery, type WebhookEndpoint, type WebhookEnvelope, type WebhookEvent, type WebhookFormat } from '@handoff/shared';
import { em, type Orm } from '../db/orm.js';
import type { Logger } from '../logger.js';
import { uuidv7 } from './ids.js';
import type { SecretBox } from './secret-box.js';

export interface WebhookOptions {
  /** First retry delay in ms; doubles per attempt (±50 % jitter), capped at 1 h. */
  retryBaseMs: number;
  /** Give up (status `failed`) once a delivery's event is older than this, in ms. */
  maxAgeMs: number;
  /** How often this node looks for due deliveries, in ms. */
  pollIntervalMs: number;
  /** One attempt's timeout in ms; a claim lasts 3× this (then another node may retry it). */
  timeoutMs: number;
  /** Base URL of the dashboard for links (Slack format); null → a path. */
  publicUrl: string | null;
  /** Deliveries claimed per pass. Default 20. */
  batch?: number;
}

/** An event as a service reports it (after its transaction committed). */
export interface WebhookEmit {
  event: WebhookEvent;
  /** Identifies the occurrence: the same key emitted twice (a resync, a second node) is delivered once per endpoint. */
  key: string;
  runId: string | null;
  data: Record<string, unknown>;
  /** When it happened. Default now. */
  at?: Date;
}

const MAX_BACKOFF_MS = 60 * 60 * 1000;
const MAX_ERROR_CHARS = 500;

interface EndpointRow {
  id: string;
  url: string;
  events: WebhookEvent[];
  description: string | null;
  format: WebhookFormat;
  created_by: string;
  created_at: Date | string;
}
interface DeliveryRow {
  id: string;
  endpoint_id: string;
  event: WebhookEvent;
  status: WebhookDelivery['status'];
  attempts: number;
  last_error: string | null;
  last_status_code: number | null;
  created_at: Date | string;
  next_attempt_at: Date | string | null;
  delivered_at: Date | string | null;
}
interface ClaimedRow {
  id: string;
  event: WebhookEvent;
  payload: WebhookEnvelope | string;
  attempts: number;
  created_at: Date | string;
  url: string;
  format: WebhookFormat;
  secret_sealed: string;
  endpoint_id: string;
}

const iso = (d: Date | string | null): string | null => (d === null ? null : new Date(d).toISOString());

/** `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` (docs/webhooks.md). */
export function webhookSignature(secret: string, body: string, unixSeconds: number): string {
  const mac = createHmac('sha256', secret).update(`${unixSeconds}.${body}`).digest('hex');
  return `t=${unixSeconds},v1=${mac}`;
}

/** Delay before attempt `attempts + 1`: exponential with full ±50 % jitter, so endpoints recovering together are not hit in lockstep. */
export function retryDelayMs(baseMs: number, attempts: number, random: () => number = Math.random): number {
  const exp = Math.min(MAX_BACKOFF_MS, baseMs * 2 ** Math.max(0, attempts - 1));
  return Math.round(exp * (0.5 + random()));
}

/**
 * Outbound webhooks: admins' endpoints, and the delivery queue in the database. Events are
 * enqueued after the command that caused them committed, one row per subscribed endpoint;
 * every hub node polls the queue and claims due rows with FOR UPDATE SKIP LOCKED, so each
 * attempt is made by one node, and a node that dies mid-attempt loses its claim after 3×
 * the timeout (at least once; receivers dedupe on `X-Handoff-Delivery`).
 */
export class WebhookService {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;

  constructor(
    private readonly orm: Orm,
    private readonly box: SecretBox,
    private readonly log: Logger,
    private readonly options: WebhookOptions,
  ) {}

  async create(actorName: string, body: CreateWebhookBody): Promise<{ endpoint: WebhookEndpoint; secret: string }> {
    const id = uuidv7();
    const secret = `whsec_${randomBytes(32).toString('base64url')}`;
    const rows = await em(this.orm).execute<EndpointRow[]>(
      `insert into webhook_endpoints (id, url, events, description, format, secret_sealed, created_by) values (?, ?, ?::jsonb, ?, ?, ?, ?)
        returning id, url, events, description, format, created_by, created_at`,
      [id, body.url, JSON.stringify([...new Set(body.events)]), body.description ?? null, body.format, this.box.seal(secret, id), actorName],
    );
    this.log.info({ endpointId: id, events: body.events, format: body.format }, 'webhook endpoint registered');
    return { endpoint: endpointView(rows[0]!), secret };
  }

  async list(): Promise<WebhookEndpoint[]> {
    const rows = await em(this.orm).execute<EndpointRow[]>(
      `select id, url, events, description, format, created_by, created_at from webhook_endpoints where deleted_at is null order by created_at`,
    );
    return rows.map(endpointView);
  }

  /** Removes an endpoint: no new deliveries, and the pending ones are dropped (the history stays). */
  async remove(id: string): Promise<WebhookEndpoint> {
    return em(this.orm).transactional(async (tx) => {
      const rows = await tx.execute<EndpointRow[]>(
        `update webhook_endpoints set deleted_at = now() where id = ? and deleted_at is null returning id, url, events, description, format, created_by, created_at`,
        [id],
      );
      if (!rows[0]) throw new AppError({ code: ErrorCode.NOT_FOUND, message: 'no such webhook endpoint' });
      await tx.execute(`update webhook_deliveries set status = 'failed', last_error = 'endpoint removed', claimed_until = null where endpoint_id = ? and status = 'pending'`, [id]);
      return endpointView(rows[0]);
    });
  }

  /** The endpoint's newest deliveries (at most 200). */
  async deliveries(endpointId: string): Promise<WebhookDelivery[]> {
    const exists = await em(this.orm).execute<{ id: string }[]>(`select id from webhook_endpoints where id = ?`, [endpointId]);
    if (!exists[0]) throw new AppError({ code: ErrorCode.NOT_FOUND, message: 'no such webhook endpoint' });
    const rows = await em(this.orm).execute<DeliveryRow[]>(
      `select id, endpoint_id, event, status, attempts, last_error, last_status_code, created_at, next_attempt_at, delivered_at
         from webhook_deliveries where endpoint_id = ? order by created_at desc, id desc limit 200`,
      [endpointId],
    );
    return rows.map((r) => ({
      id: r.id,
      endpointId: r.endpoint_id,
      event: r.event,
      status: r.status,
      attempts: r.attempts,
      lastError: r.last_error,
      lastStatusCode: r.last_status_code,
      createdAt: iso(r.created_at)!,
      nextAttemptAt: r.status === 'pending' ? iso(r.next_attempt_at) : null,
      deliveredAt: iso(r.delivered_at),
    }));
  }

  /**
   * Enqueues an event for every endpoint subscribed to it (idempotent per `key`), then
   * looks for due deliveries at once. Never rejects: a lost webhook must not fail the command
   * that caused it (it is logged).
   */
  emit(e: WebhookEmit): void {
    const envelope: WebhookEnvelope = { id: uuidv7(), event: e.event, at: (e.at ?? new Date()).toISOString(), runId: e.runId, data: e.data };
    void em(this.orm)
      .execute<{ id: string }[]>(
        `insert into webhook_deliveries (id, endpoint_id, event_id, event, dedupe_key, payload)
           select gen_random_uuid(), id, ?, ?, ?, ?::jsonb from webhook_endpoints
            where deleted_at is null and events @> ?::jsonb and created_at <= ?
           on conflict (endpoint_id, dedupe_key) do nothing returning id`,
        // An endpoint hears of what happens after it was registered: a later push about an
        // old occurrence (a finished run updated again) is not news to it.
        [envelope.id, e.event, `${e.event}:${e.key}`, JSON.stringify(envelope), JSON.stringify([e.event]), envelope.at],
      )
      .then((rows) => {
        if (rows.length > 0) this.kick();
      })
      .catch((err: unknown) => this.log.error({ err, event: e.event, runId: e.runId }, 'could not enqueue a webhook event'));
  }

  start(): void {
    if (this.timer || this.stopped) return;
    this.timer = setInterval(() => this.kick(), this.options.pollIntervalMs);
    this.timer.unref();
    this.kick();
  }

  /** Stops polling and waits for the attempts in flight (their claims end with them). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  /** Runs a delivery pass now (or right after the one in progress). */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.pass()
      .catch((err: unknown) => this.log.warn({ err }, 'webhook delivery pass failed'))
      .finally(() => {
        this.running = null;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  private async pass(): Promise<void> {
    for (;;) {
      const claimed = await em(this.orm).execute<ClaimedRow[]>(
        `update webhook_deliveries d
            set status = 'delivering', attempts = d.attempts + 1, claimed_until = now() + (? * interval '1 millisecond')
           from webhook_endpoints e
          where e.id = d.endpoint_id
            and d.id in (select id from webhook_deliveries
                          where (status = 'pending' and next_attempt_at <= now()) or (status = 'delivering' and claimed_until < now())
                          order by next_attempt_at limit ? for update skip locked)
          returning d.id, d.event, d.payload, d.attempts, d.created_at, e.url, e.format, e.secret_sealed, e.id as endpoint_id`,
        [3 * this.options.timeoutMs, this.options.batch ?? 20],
      );
      if (claimed.length === 0 || this.stopped) return;
      await Promise.all(claimed.map((row) => this.attempt(row)));
    }
  }

  private async attempt(row: ClaimedRow): Promise<void> {
    const envelope = (typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload) as WebhookEnvelope;
    const body = JSON.stringify(row.format === 'slack' ? slackBody(envelope, this.options.publicUrl) : envelope);
    let statusCode: number | null = null;
    let error: string | null = null;
    try {
      const secret = this.box.open(row.secret_sealed, row.endpoint_id);
      const res = await fetch(row.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'Handoff-Webhooks/1',
          'x-handoff-event': row.event,
          'x-handoff-delivery': row.id,
          'x-handoff-signature': webhookSignature(secret, body, Math.floor(Date.now() / 1000)),
        },
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.options.timeoutMs),
      });
      statusCode = res.status;
      await res.body?.cancel().catch(() => undefined);
      if (res.status < 200 || res.status >= 300) error = `HTTP ${res.status}`;
    } catch (err) {
      error = (err instanceof Error ? `${err.message}${err.cause instanceof Error ? `: ${err.cause.message}` : ''}` : String(err)).slice(0, MAX_ERROR_CHARS);
    }
    if (error === null) {
      await em(this.orm).execute(
        `update webhook_deliveries set status = 'succeeded', delivered_at = now(), claimed_until = null, last_status_code = ?, last_error = null where id = ? and status = 'delivering'`,
        [statusCode, row.id],
      );
      this.log.info({ deliveryId: row.id, event: row.event, endpointId: row.endpoint_id, attempts: row.attempts }, 'webhook delivered');
      return;
    }
    const expired = Date.now() - new Date(row.created_at).getTime() >= this.options.maxAgeMs;
    const delay = retryDelayMs(this.options.retryBaseMs, row.attempts);
    await em(this.orm).execute(
      `update webhook_deliveries set status = ?, claimed_until = null, last_status_code = ?, last_error = ?, next_attempt_at = now() + (? * interval '1 millisecond')
        where id = ? and status = 'delivering'`,
      [expired ? 'failed' : 'pending', statusCode, error, delay, row.id],
    );
    this.log.warn({ deliveryId: row.id, event: row.event, endpointId: row.endpoint_id, attempts: row.attempts, error, retryInMs: expired ? null : delay }, expired ? 'webhook delivery given up' : 'webhook delivery failed; will retry');
  }
}

function endpointView(r: EndpointRow): WebhookEndpoint {
  return {
    id: r.id,
    url: r.url,
    events: typeof r.events === 'string' ? (JSON.parse(r.events) as WebhookEvent[]) : r.events,
    description: r.description,
    format: r.format,
    createdBy: r.created_by,
    createdAt: iso(r.created_at)!,
  };
}

/** Slack incoming-webhook body: one line of text with a link to the run. */
export function slackBody(e: WebhookEnvelope, publicUrl: string | null): { text: string } {
  const link = e.runId ? `${publicUrl ? publicUrl.replace(/\/$/, '') : ''}/runs/${e.runId}` : null;
  const d = e.data as Record<string, string | null | undefined>;
  const what: Record<WebhookEvent, string> = {
    'run.needs_operator': `needs an operator: ${d.reason ?? ''}`,
    'approval.requested': `approval requested by ${d.requester ?? 'someone'} for ${d.action ?? 'an action'}`,
    'approval.resolved': `approval for ${d.action ?? 'an action'} ${d.status ?? 'resolved'}${d.resolvedBy ? ` by ${d.resolvedBy}` : ''}`,
    'session.grace': `live session expires at ${d.expiresAt ?? '?'}`,
    'run.finished': `finished: ${d.status ?? '?'}${d.exitCode !== undefined && d.exitCode !== null ? ` (exit ${d.exitCode})` : ''}`,
    'takeover.started': `taken over by ${d.by ?? 'an operator'}`,
    'takeover.ended': `handed back by ${d.by ?? 'an operator'}: ${d.summary ?? ''}`,
  };
  const run = e.runId ? (link && /^https?:/.test(link) ? `<${link}|run ${e.runId.slice(0, 8)}>` : `run ${e.runId} (${link})`) : 'Handoff';
  return { text: `[${e.event}] ${run} ${what[e.event]}` };
}
