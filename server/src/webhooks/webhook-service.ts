import type { Clock, TimerHandle } from '@handoff/shared';
import { createHmac, randomBytes } from 'node:crypto';
import { AppError, ErrorCode, type CreateWebhookBody, type WebhookDelivery, type WebhookEndpoint, type WebhookEnvelope, type WebhookEvent } from '@handoff/shared';
import { em, type Orm } from '../infra/db/orm.js';
import type { Logger } from '../logger.js';
import { uuidv7 } from '../infra/ids.js';
import type { SecretBox } from '../infra/secret-box.js';
import {
  claimDueDeliveries,
  endpointExists,
  failPendingDeliveries,
  insertEndpoint,
  listEndpoints,
  markAttemptFailed,
  markDelivered,
  markEndpointRemoved,
  newestDeliveries,
  type ClaimedRow,
  type EndpointRow,
} from './webhook-queries.js';

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

const MAX_BACKOFF_MS = 60 * 60 * 1000;
const MAX_ERROR_CHARS = 500;

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
 * enqueued by the database in the transaction of the change that caused them, one row per
 * subscribed endpoint (migration 0012, a trigger on the audit insert); every hub node polls the queue and claims due rows with FOR UPDATE SKIP LOCKED, so each
 * attempt is made by one node, and a node that dies mid-attempt loses its claim after 3×
 * the timeout (at least once; receivers dedupe on `X-Handoff-Delivery`).
 */
export class WebhookService {
  private timer: TimerHandle | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;

  constructor(
    private readonly orm: Orm,
    private readonly box: SecretBox,
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly options: WebhookOptions,
  ) {}

  async create(actorName: string, body: CreateWebhookBody): Promise<{ endpoint: WebhookEndpoint; secret: string }> {
    const id = uuidv7();
    const secret = `whsec_${randomBytes(32).toString('base64url')}`;
    const row = await insertEndpoint(em(this.orm), {
      id, url: body.url, events: [...new Set(body.events)], description: body.description ?? null, format: body.format, secretSealed: this.box.seal(secret, id), createdBy: actorName,
    });
    this.log.info({ endpointId: id, events: body.events, format: body.format }, 'webhook endpoint registered');
    return { endpoint: endpointView(row), secret };
  }

  async list(): Promise<WebhookEndpoint[]> {
    const rows = await listEndpoints(em(this.orm));
    return rows.map(endpointView);
  }

  /**
   * Removes an endpoint: no new deliveries, and the pending ones are dropped (the history
   * stays). An attempt in flight ends as it ends: delivered if it succeeds, `failed` (endpoint
   * removed) if not. No further attempt is made once this returns (webhook-queries.ts).
   */
  async remove(id: string): Promise<WebhookEndpoint> {
    return em(this.orm).transactional(async (tx) => {
      const row = await markEndpointRemoved(tx, id);
      if (!row) throw new AppError({ code: ErrorCode.NOT_FOUND, message: 'no such webhook endpoint' });
      await failPendingDeliveries(tx, id);
      return endpointView(row);
    });
  }

  /** The endpoint's newest deliveries (at most 200). */
  async deliveries(endpointId: string): Promise<WebhookDelivery[]> {
    if (!(await endpointExists(em(this.orm), endpointId))) throw new AppError({ code: ErrorCode.NOT_FOUND, message: 'no such webhook endpoint' });
    const rows = await newestDeliveries(em(this.orm), endpointId);
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

  start(): void {
    if (this.timer || this.stopped) return;
    this.timer = this.clock.setInterval(() => this.kick(), this.options.pollIntervalMs).unref();
    this.kick();
  }

  /** Stops polling and waits for the attempts in flight (their claims end with them). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = null;
    await this.running;
  }

  /** Runs a delivery pass now (or right after the one in progress): called after a commit that may have queued events. */
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
      const { claimed, ended } = await claimDueDeliveries(em(this.orm), 3 * this.options.timeoutMs, this.options.batch ?? 20);
      if (ended.length) this.log.info({ deliveryIds: ended }, 'webhook deliveries ended: endpoint removed');
      if ((claimed.length === 0 && ended.length === 0) || this.stopped) return;
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
          'x-handoff-signature': webhookSignature(secret, body, Math.floor(this.clock.now() / 1000)),
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
      await markDelivered(em(this.orm), row.id, statusCode);
      this.log.info({ deliveryId: row.id, event: row.event, endpointId: row.endpoint_id, attempts: row.attempts }, 'webhook delivered');
      return;
    }
    const expired = this.clock.now() - new Date(row.created_at).getTime() >= this.options.maxAgeMs;
    const delay = retryDelayMs(this.options.retryBaseMs, row.attempts);
    // The endpoint may have been removed during the attempt: the update then ends the delivery instead.
    const marked = await markAttemptFailed(em(this.orm), row.id, { status: expired ? 'failed' : 'pending', statusCode, error, retryInMs: delay });
    const log = { deliveryId: row.id, event: row.event, endpointId: row.endpoint_id, attempts: row.attempts, error };
    if (marked?.endpoint_removed) this.log.warn(log, 'webhook delivery ended: endpoint removed');
    else this.log.warn({ ...log, retryInMs: expired ? null : delay }, expired ? 'webhook delivery given up' : 'webhook delivery failed; will retry');
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
