import { describe, expect, it } from 'vitest';
import { ConnectionException, DriverException, UniqueConstraintViolationException } from '@mikro-orm/core';
import { AppError, ErrorCode } from '@handoff/shared';
import { isDatabaseUnavailable, isRefusal, toAppError } from './errors.js';

const pgError = (message: string, code?: string) => Object.assign(new Error(message), code ? { code } : {});

describe('database outage classification', () => {
  it('recognises what the driver throws while PostgreSQL is stopped, stopping or starting', () => {
    // Observed against a real cluster stopped with `pg_ctl -m fast` / `-m immediate`.
    expect(isDatabaseUnavailable(new DriverException(pgError('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED')))).toBe(true);
    expect(isDatabaseUnavailable(pgError('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED'))).toBe(true);
    expect(isDatabaseUnavailable(new DriverException(pgError('terminating connection due to administrator command', '57P01')))).toBe(true);
    expect(isDatabaseUnavailable(new DriverException(pgError('Connection terminated unexpectedly')))).toBe(true);
    expect(isDatabaseUnavailable(pgError('the database system is starting up', '57P03'))).toBe(true);
    expect(isDatabaseUnavailable(pgError('timeout exceeded when trying to connect'))).toBe(true);
    expect(isDatabaseUnavailable(pgError('connection failure', '08006'))).toBe(true);
    expect(isDatabaseUnavailable(new ConnectionException(new Error('x')))).toBe(true);
    expect(isDatabaseUnavailable(new Error('wrapped', { cause: pgError('read ECONNRESET', 'ECONNRESET') }))).toBe(true);
  });

  it('leaves bugs and data errors alone', () => {
    expect(isDatabaseUnavailable(new UniqueConstraintViolationException(pgError('duplicate key', '23505')))).toBe(false);
    expect(isDatabaseUnavailable(pgError('syntax error', '42601'))).toBe(false);
    expect(isDatabaseUnavailable(new TypeError('x is undefined'))).toBe(false);
    expect(isDatabaseUnavailable(undefined)).toBe(false);
  });

  it('maps an outage to UNAVAILABLE with a retry hint, an unknown error to INTERNAL, an AppError as is', () => {
    const down = toAppError(pgError('connect ECONNREFUSED', 'ECONNREFUSED'));
    expect(down.code).toBe(ErrorCode.UNAVAILABLE);
    expect(down.details).toEqual({ retryAfterMs: expect.any(Number) });
    expect(toAppError(new Error('boom')).code).toBe(ErrorCode.INTERNAL);
    const own = new AppError({ code: ErrorCode.NOT_FOUND, message: 'no' });
    expect(toAppError(own)).toBe(own);
  });
});

describe('refusals and failures', () => {
  it('a refusal is an AppError that says why; an outage, a driver error or a bug is not', () => {
    expect(isRefusal(new AppError({ code: ErrorCode.FORBIDDEN, message: 'denied by the policy' }))).toBe(true);
    expect(isRefusal(new AppError({ code: ErrorCode.STATE_CONFLICT, message: 'already active' }))).toBe(true);
    expect(isRefusal(new AppError({ code: ErrorCode.UNAVAILABLE, message: 'the database is unavailable' }))).toBe(false);
    expect(isRefusal(new DriverException(new Error('injected: live_sessions insert failed')))).toBe(false);
    expect(isRefusal(new TypeError('x is undefined'))).toBe(false);
  });
});
