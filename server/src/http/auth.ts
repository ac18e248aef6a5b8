import type { NextFunction, Request, Response } from 'express';
import { AppError, ErrorCode, type Role } from '@handoff/shared';
import { roleAtLeast } from '../domain/roles.js';
import type { AuthService, Principal } from '../auth/auth-service.js';
import { userActor, type UserActor } from '../policy/policy-gate.js';
import type { RateLimits } from '../infra/rate-limits.js';
import { metrics } from '../metrics.js';
import { clientIp } from './client-ip.js';

/** The authenticated principal of a request (set by `authenticate`). */
export function principalOf(res: Response): Principal | undefined {
  return res.locals.principal as Principal | undefined;
}

/** Reads the bearer token from `Authorization: Bearer <token>`. */
export function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)$/i.exec(header ?? '');
  return match?.[1];
}

/** The client address of a request (see client-ip.ts), set by `throttle`. */
function ipOf(res: Response): string {
  return res.locals.clientIp as string;
}

function refuse(res: Response, retryAfterMs: number, why: string): never {
  metrics.rateLimited.inc({ edge: 'rest' });
  res.setHeader('retry-after', String(Math.ceil(retryAfterMs / 1000)));
  throw new AppError({ code: ErrorCode.RATE_LIMITED, message: `${why}; retry in ${retryAfterMs} ms`, details: { retryAfterMs } });
}

/**
 * First on /api, before the body is parsed or a token looked up: a per-IP request budget,
 * and an IP over its failed-authentication budget is refused outright (429 RATE_LIMITED
 * with Retry-After) — a flood of wrong tokens costs neither a parse nor a query.
 */
export function throttle(limits: RateLimits, trustedHops: number) {
  return async (req: Request, res: Response, next: NextFunction) => {
    const ip = clientIp(req.socket.remoteAddress, req.headers['x-forwarded-for'], trustedHops);
    res.locals.clientIp = ip;
    const blocked = await limits.authBlocked(ip);
    if (blocked) refuse(res, blocked, 'too many failed authentications from your address');
    const wait = await limits.request(ip);
    if (wait) refuse(res, wait, 'too many requests from your address');
    next();
  };
}

/**
 * Authenticates every /api request (an unknown or missing token is 401 UNAUTHENTICATED and
 * counts against the IP's failure budget; the failure that exceeds it is already 429), then
 * rate-limits per principal, cluster-wide (429 RATE_LIMITED with Retry-After).
 */
export function authenticate(auth: AuthService, limits: RateLimits) {
  return async (req: Request, res: Response, next: NextFunction) => {
    const principal = await auth.authenticate(bearerToken(req.headers.authorization));
    if (!principal) {
      const blocked = await limits.authFailed(ipOf(res));
      if (blocked) refuse(res, blocked, 'too many failed authentications from your address');
      throw new AppError({ code: ErrorCode.UNAUTHENTICATED, message: 'a valid bearer token is required' });
    }
    const retryAfterMs = await limits.principal(`${principal.kind}:${principal.id}`);
    if (retryAfterMs) refuse(res, retryAfterMs, 'too many requests');
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
