import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { pinoHttp } from 'pino-http';
import type { Logger } from 'pino';
import { apiRoutes } from '@handoff/shared';
import { metrics } from '../metrics.js';
import { requestContext, type RequestContext } from '../request-context.js';
import type { Principal } from '../auth/auth-service.js';

/** A client-chosen request id is kept only if it is short and plain (it lands in logs and headers). */
const SAFE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;

/** Probes and scrapes are frequent and uninteresting: logged at debug, not info. */
const QUIET = new Set(['/healthz', '/readyz', '/metrics']);

/** The documented route pattern of a request (`/api/task-runs/{id}`), never its raw path: metric labels stay bounded. */
const patterns = apiRoutes.map((r) => ({
  method: r.method.toUpperCase(),
  path: r.path,
  regex: new RegExp(`^${r.path.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\\?\{\w+\\?\}/g, '[^/]+')}$`),
}));
export function routePattern(method: string, path: string): string {
  const hit = patterns.find((p) => p.method === method && p.regex.test(path));
  if (hit) return hit.path;
  return path.startsWith('/api/') ? '/api/unmatched' : 'static';
}

/**
 * Request ids, access log lines and request metrics, mounted first so every response
 * (errors included) carries `X-Request-Id`. A line names the user and the correlation ids
 * of the audit rows the request appended; it never carries headers (tokens, cookies).
 */
export function accessLog(log: Logger): RequestHandler[] {
  const context: RequestHandler = (req: Request, res: Response, next: NextFunction) => {
    const ctx: RequestContext = { correlationIds: new Set() };
    res.locals.requestContext = ctx;
    const started = performance.now();
    res.on('finish', () => {
      // originalUrl: inside a mounted router req.path is relative to the mount point.
      const path = req.originalUrl.split('?')[0]!;
      metrics.httpDuration.observe({ method: req.method, route: routePattern(req.method, path), status: String(res.statusCode) }, (performance.now() - started) / 1000);
    });
    requestContext.run(ctx, next);
  };
  const http = pinoHttp({
    logger: log.child({ module: 'http' }),
    genReqId(req: IncomingMessage, res: ServerResponse) {
      const given = req.headers['x-request-id'];
      const id = typeof given === 'string' && SAFE_REQUEST_ID.test(given) ? given : randomUUID();
      res.setHeader('x-request-id', id);
      return id;
    },
    // Only what an operator needs to find a request; headers and bodies stay out of the log.
    serializers: {
      req: (req: { id: string; method: string; url: string }) => ({ id: req.id, method: req.method, url: req.url.split('?')[0] }),
      res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
    },
    customProps(_req: IncomingMessage, res: ServerResponse) {
      if (!res.headersSent) return {};
      const locals = (res as unknown as Response).locals;
      const principal = locals.principal as Principal | undefined;
      const ids = [...((locals.requestContext as RequestContext | undefined)?.correlationIds ?? [])];
      return {
        ...(principal ? { principalKind: principal.kind, userId: principal.id } : {}),
        ...(ids.length === 1 ? { correlationId: ids[0] } : ids.length > 1 ? { correlationIds: ids } : {}),
      };
    },
    customLogLevel(req: IncomingMessage, res: ServerResponse, err?: Error) {
      if (err || res.statusCode >= 500) return 'error';
      if (QUIET.has((req.url ?? '').split('?')[0]!)) return 'debug';
      return res.statusCode >= 400 ? 'warn' : 'info';
    },
  });
  return [context, http as unknown as RequestHandler];
}
