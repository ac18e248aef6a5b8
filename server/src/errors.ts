import { ConnectionException } from '@mikro-orm/core';
import { AppError, ErrorCode } from '@handoff/shared';

/** What a client is told to wait before retrying while a dependency is down (`Retry-After`, ack `details`). */
export const UNAVAILABLE_RETRY_AFTER_MS = 2000;
/** … and after its transaction lost to a concurrent one. */
export const CONFLICT_RETRY_AFTER_MS = 1000;

// 40001 serialization_failure, 40P01 deadlock_detected, 55P03 lock_not_available: PostgreSQL
// rolled the transaction back because of a concurrent one. Nothing was written, and the same
// request succeeds when it is made again.
const TRANSIENT_CONFLICT = new Set(['40001', '40P01', '55P03']);

// Socket-level failures reaching (or holding a connection to) the database server.
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);
// 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now (starting up / shutting down).
const SERVER_GOING_AWAY = new Set(['57P01', '57P02', '57P03']);
// What pg / pg-pool / kysely say (without a code) when a connection dies or cannot be had in time.
const CONNECTION_MESSAGES = /connection terminated|timeout exceeded when trying to connect|connection timeout|client has encountered a connection error|not queryable|terminating connection|database system is (starting up|shutting down|in recovery mode)/i;

/**
 * True when `err` (or one of its causes) means the database cannot be reached right now —
 * an outage to retry, not a bug. What is thrown depends on where the connection died: a
 * MikroORM `DriverException` carrying the pg code (57P01 when the server stops while a
 * query runs), a plain Error with ECONNREFUSED from `transactional()`'s BEGIN, or pg's
 * "Connection terminated unexpectedly" after a crash.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 6; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof ConnectionException) return true;
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (NETWORK_CODES.has(code) || SERVER_GOING_AWAY.has(code) || /^08[0-9A-Z]{3}$/.test(code))) return true;
    const message = (e as { message?: unknown }).message;
    if (typeof message === 'string' && CONNECTION_MESSAGES.test(message)) return true;
  }
  return false;
}

/** True when `err` (or one of its causes) is a transaction PostgreSQL rolled back for a concurrent one (see TRANSIENT_CONFLICT). */
export function isTransientConflict(err: unknown): boolean {
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 6; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && TRANSIENT_CONFLICT.has(code)) return true;
  }
  return false;
}

/**
 * True when `err` is a decision (an AppError that says why: the policy, a conflict, a limit)
 * rather than a failure: trying the same thing again would be refused again. An outage
 * (`UNAVAILABLE`) and anything unexpected are not refusals — a reaction with no caller to
 * answer retries them (see `afterStart` in worker-namespace.ts).
 */
export function isRefusal(err: unknown): boolean {
  return err instanceof AppError && err.code !== ErrorCode.UNAVAILABLE;
}

/**
 * Maps anything thrown to a known error, for the edges' boundaries: an AppError as is, a
 * database outage or a transaction lost to a concurrent one `UNAVAILABLE` (retryable, with
 * `retryAfterMs`), anything else `INTERNAL`.
 */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  if (isDatabaseUnavailable(err)) {
    return new AppError({ code: ErrorCode.UNAVAILABLE, message: 'the database is unavailable; retry shortly', details: { retryAfterMs: UNAVAILABLE_RETRY_AFTER_MS }, cause: err });
  }
  if (isTransientConflict(err)) {
    return new AppError({ code: ErrorCode.UNAVAILABLE, message: 'a concurrent change conflicted with this one, and nothing was written; retry', details: { retryAfterMs: CONFLICT_RETRY_AFTER_MS }, cause: err });
  }
  return new AppError({ code: ErrorCode.INTERNAL, message: 'internal error', cause: err });
}
