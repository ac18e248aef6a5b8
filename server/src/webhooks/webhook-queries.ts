import type { WebhookDelivery, WebhookEnvelope, WebhookEvent, WebhookFormat } from '@handoff/shared';
import type { Em } from '../infra/db/orm.js';

// The webhook endpoints and the delivery queue (migration 0012). Deliveries are claimed with
// FOR UPDATE SKIP LOCKED and settled by conditional updates (`where status = 'delivering'`),
// so any number of hub nodes share the queue without an attempt being made twice at once.
// Once an endpoint's removal commits, no delivery of it is claimed again: the claim and the
// failed attempt's update read the endpoint row themselves (for share), so this holds across
// nodes and whatever statement a node dies after.

/** The `last_error` of a delivery that ended because its endpoint was removed. */
export const ENDPOINT_REMOVED = 'endpoint removed';

/** An endpoint as the API shows it (never its sealed secret). */
export interface EndpointRow {
  id: string;
  url: string;
  events: WebhookEvent[];
  description: string | null;
  format: WebhookFormat;
  created_by: string;
  created_at: Date | string;
}

export interface DeliveryRow {
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

/** A delivery claimed for one attempt, with what the attempt needs of its endpoint. */
export interface ClaimedRow {
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

/** Registers an endpoint; `secretSealed` is its signing secret, sealed for its id. */
export async function insertEndpoint(
  tx: Em,
  endpoint: { id: string; url: string; events: WebhookEvent[]; description: string | null; format: WebhookFormat; secretSealed: string; createdBy: string },
): Promise<EndpointRow> {
  const rows = await tx.execute<EndpointRow[]>(
    `insert into webhook_endpoints (id, url, events, description, format, secret_sealed, created_by) values (?, ?, ?::jsonb, ?, ?, ?, ?)
      returning id, url, events, description, format, created_by, created_at`,
    [endpoint.id, endpoint.url, JSON.stringify(endpoint.events), endpoint.description, endpoint.format, endpoint.secretSealed, endpoint.createdBy],
  );
  return rows[0]!;
}

/** The endpoints not removed, oldest first. */
export async function listEndpoints(tx: Em): Promise<EndpointRow[]> {
  return tx.execute<EndpointRow[]>(
    `select id, url, events, description, format, created_by, created_at from webhook_endpoints where deleted_at is null order by created_at`,
  );
}

/** Marks the endpoint removed (the row stays, for its history); undefined when there is no such live endpoint. */
export async function markEndpointRemoved(tx: Em, endpointId: string): Promise<EndpointRow | undefined> {
  const rows = await tx.execute<EndpointRow[]>(
    `update webhook_endpoints set deleted_at = now() where id = ? and deleted_at is null returning id, url, events, description, format, created_by, created_at`,
    [endpointId],
  );
  return rows[0];
}

/**
 * The endpoint's pending deliveries fail as `endpoint removed`. One in flight (`delivering`)
 * is left to its attempt: recorded delivered if it succeeds, failed as `endpoint removed` if
 * not (markAttemptFailed), and never claimed again (claimDueDeliveries).
 */
export async function failPendingDeliveries(tx: Em, endpointId: string): Promise<void> {
  await tx.execute(`update webhook_deliveries set status = 'failed', last_error = '${ENDPOINT_REMOVED}', claimed_until = null where endpoint_id = ? and status = 'pending'`, [endpointId]);
}

/** Whether the endpoint exists, removed or not. */
export async function endpointExists(tx: Em, endpointId: string): Promise<boolean> {
  const rows = await tx.execute<{ id: string }[]>(`select id from webhook_endpoints where id = ?`, [endpointId]);
  return !!rows[0];
}

/** The endpoint's newest deliveries, at most 200. */
export async function newestDeliveries(tx: Em, endpointId: string): Promise<DeliveryRow[]> {
  return tx.execute<DeliveryRow[]>(
    `select id, endpoint_id, event, status, attempts, last_error, last_status_code, created_at, next_attempt_at, delivered_at
       from webhook_deliveries where endpoint_id = ? order by created_at desc, id desc limit 200`,
    [endpointId],
  );
}

/** What a claim did: the deliveries it claimed for an attempt, and those it ended because their endpoint was removed. */
export interface Claim {
  claimed: ClaimedRow[];
  /** Ids of due deliveries of removed endpoints, now `failed` as `endpoint removed` without an attempt. */
  ended: string[];
}

/**
 * Claims up to `limit` deliveries for an attempt each: due pending ones, and ones whose claim
 * ran out (their node died mid-attempt). A claim lasts `claimMs`; rows another node is
 * claiming at the same moment are skipped, not waited for.
 *
 * A due delivery of a removed endpoint is never claimed: the same statement ends it `failed`
 * (`endpoint removed`), with no attempt. Such rows exist when a node died mid-attempt (its
 * claim lapses after the removal) or a change queued one concurrently with the removal. The
 * endpoint row is locked `for share` (skipped while a removal holds it): a claim either
 * commits before a concurrent removal's update of the endpoint (the attempt is one in flight
 * at the removal) or sees the endpoint removed, even when the removal committed while this
 * statement ran. The claim never waits for a lock (skip locked), so it cannot deadlock with a
 * removal (which may wait for it).
 */
export async function claimDueDeliveries(tx: Em, claimMs: number, limit: number): Promise<Claim> {
  const rows = await tx.execute<(ClaimedRow & { status: string })[]>(
    `with due as (
       select d.id, e.deleted_at is not null as removed
         from webhook_deliveries d join webhook_endpoints e on e.id = d.endpoint_id
        where (d.status = 'pending' and d.next_attempt_at <= now()) or (d.status = 'delivering' and d.claimed_until < now())
        order by d.next_attempt_at limit ?
          for update of d skip locked
          for share of e skip locked
     )
     update webhook_deliveries d
        set status = case when due.removed then 'failed' else 'delivering' end,
            attempts = case when due.removed then d.attempts else d.attempts + 1 end,
            claimed_until = case when due.removed then null else now() + (? * interval '1 millisecond') end,
            last_error = case when due.removed then '${ENDPOINT_REMOVED}' else d.last_error end
       from due, webhook_endpoints e
      where d.id = due.id and e.id = d.endpoint_id
      returning d.id, d.status, d.event, d.payload, d.attempts, d.created_at, e.url, e.format, e.secret_sealed, e.id as endpoint_id`,
    [limit, claimMs],
  );
  const claimed: ClaimedRow[] = [];
  const ended: string[] = [];
  for (const { status, ...row } of rows) {
    if (status === 'delivering') claimed.push(row);
    else ended.push(row.id);
  }
  return { claimed, ended };
}

/** The claimed delivery succeeded with HTTP `statusCode` (recorded so even if its endpoint was removed meanwhile: it was sent). */
export async function markDelivered(tx: Em, deliveryId: string, statusCode: number | null): Promise<void> {
  await tx.execute(
    `update webhook_deliveries set status = 'succeeded', delivered_at = now(), claimed_until = null, last_status_code = ?, last_error = null where id = ? and status = 'delivering'`,
    [statusCode, deliveryId],
  );
}

/**
 * The claimed delivery's attempt failed: `pending` again, due in `retryInMs`, or given up
 * (`failed`). If its endpoint was removed meanwhile, it ends `failed` as `endpoint removed`
 * instead, never pending again. The endpoint row is read `for share`, so a removal committing
 * concurrently is either seen here or comes after (and then fails the row as pending). Returns
 * the status written and whether the endpoint was removed, or undefined when the claim was no
 * longer held.
 */
export async function markAttemptFailed(
  tx: Em,
  deliveryId: string,
  outcome: { status: 'pending' | 'failed'; statusCode: number | null; error: string; retryInMs: number },
): Promise<{ status: 'pending' | 'failed'; endpoint_removed: boolean } | undefined> {
  const rows = await tx.execute<{ status: 'pending' | 'failed'; endpoint_removed: boolean }[]>(
    `with e as (
       select deleted_at from webhook_endpoints where id = (select endpoint_id from webhook_deliveries where id = ?) for share
     )
     update webhook_deliveries d
        set status = case when e.deleted_at is null then ? else 'failed' end,
            claimed_until = null, last_status_code = ?,
            last_error = case when e.deleted_at is null then ? else '${ENDPOINT_REMOVED}' end,
            next_attempt_at = now() + (? * interval '1 millisecond')
       from e
      where d.id = ? and d.status = 'delivering'
      returning d.status, e.deleted_at is not null as endpoint_removed`,
    [deliveryId, outcome.status, outcome.statusCode, outcome.error, outcome.retryInMs, deliveryId],
  );
  return rows[0];
}
