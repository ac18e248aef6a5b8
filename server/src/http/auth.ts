import type { NextFunction, Request, Response } from 'express';
import { AppError, ErrorCode, type Role } from '@handoff/shared';
import { roleAtLeast } from '../domain/roles.js';
import type { AuthService, Principal } from '../services/auth.js';
import { userActor, type UserActor } from '../services/policy-gate.js';
import type { RateLimiter } from '../services/rate-limiter.js';
import { metrics } from '../metrics.js';

/** The authenticated principal of a request (set by `authenticate`). */
export function principalOf(res: Response): Principal | undefined {
  return res.locals.principal as Principal | undefined;
}

/** Reads the bearer token from `Authorization: Bearer <token>`. */
export function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)$/i.exec(header ?? '');
  return match?.[1];
}

/**
 * Authenticates every /api request (an unknown or missing token is 401 UNAUTHENTICATED),
 * then rate-limits per principal (429 RATE_LIMITED with Retry-After).
 */
export function authenticate(auth: AuthService, limiter: RateLimiter) {
  return async (req: Request, res: Response, next: NextFunction) => {
    const principal = await auth.authenticate(bearerToken(req.headers.authorization));
    if (!principal) throw new AppError({ code: ErrorCode.UNAUTHENTICATED, message: 'a valid bearer token is required' });
    const retryAfterMs = limiter.check(`${principal.kind}:${principal.id}`);
    if (retryAfterMs) {
      metrics.rateLimited.inc({ edge: 'rest' });
      res.setHeader('retry-after', String(Math.ceil(retryAfterMs / 1000)));
      throw new AppError({ code: ErrorCode.RATE_LIMITED, message: `too many requests; retry in ${retryAfterMs} ms`, details: { retryAfterMs } });
    }
    res.locals.principal = principal;
    next();
  };
}

/** The calling user, with at least `role`; workers never use dashboard routes. */
export function requireUser(res: Response, role: Role): UserActor {
  const p = principalOf(res);
  if (!p) throw new AppError({ code: ErrorCode.UNAUTHENTICATED, message: 'a valid bearer token is required' });
  if (p.kind !== 'user') throw new AppError({ code: ErrorCode.FORBIDDEN, message: 'worker tokens cannot use the dashboard API' });
  if (!roleAtLeast(p.role, role)) throw new AppError({ code: ErrorCode.FORBIDDEN, message: `requires role ${role} (you are ${p.role})` });
  return userActor(p);
}
