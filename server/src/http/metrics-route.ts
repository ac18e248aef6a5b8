import { timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';
import { AppError, ErrorCode } from '@handoff/shared';
import { registry, scrape, type GaugeSources } from '../metrics.js';
import type { AuthService } from '../auth/auth-service.js';
import { bearerToken } from './auth.js';

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** `GET /metrics`: an admin's bearer token or HANDOFF_METRICS_TOKEN (for scrapers); 401 without, 403 for other users. */
export function metricsRoute(auth: AuthService, metricsToken: string | undefined, sources: GaugeSources): RequestHandler {
  return async (req, res) => {
    const token = bearerToken(req.headers.authorization);
    if (!token) throw new AppError({ code: ErrorCode.UNAUTHENTICATED, message: 'a bearer token is required' });
    if (!(metricsToken && sameSecret(token, metricsToken))) {
      const principal = await auth.authenticate(token);
      if (!principal) throw new AppError({ code: ErrorCode.UNAUTHENTICATED, message: 'a valid bearer token is required' });
      if (principal.kind !== 'user' || principal.role !== 'admin') throw new AppError({ code: ErrorCode.FORBIDDEN, message: 'metrics need an admin token or HANDOFF_METRICS_TOKEN' });
    }
    const body = await scrape(sources);
    res.type(registry.contentType).send(body);
  };
}
