import { isUtf8 } from 'node:buffer';
import { existsSync } from 'node:fs';
import path from 'node:path';
import express, { type Express } from 'express';
import helmet from 'helmet';
import type { Logger } from 'pino';
import { AppError, ErrorCode, type Whoami } from '@handoff/shared';
import type { AuthService } from '../auth/auth-service.js';
import type { ApprovalService } from '../approvals/approval-service.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { ControlService } from '../control/control-service.js';
import type { MessageService } from '../messages/message-service.js';
import type { PresenceService } from '../presence/presence-service.js';
import type { LiveSessionService } from '../sessions/live-session-service.js';
import type { WriteGrantService } from '../grants/write-grant-service.js';
import type { TerminalService } from '../terminal/terminal-service.js';
import type { RateLimits } from '../infra/rate-limits.js';
import type { RunService } from '../runs/run-service.js';
import { authenticate, principalOf, throttle } from './auth.js';
import { errorBoundary } from './errors.js';
import { approvalRoutes } from '../approvals/approval-routes.js';
import { tokenRoutes } from '../auth/token-routes.js';
import { webhookRoutes } from '../webhooks/webhook-routes.js';
import type { WebhookService } from '../webhooks/webhook-service.js';
import type { Notifier } from '../hooks/notifier.js';
import { auditPublicKeyRoute, auditRoutes } from '../audit/audit-routes.js';
import type { AuditAnchor } from '../audit/audit-anchor.js';
import { controlRoutes } from '../control/control-routes.js';
import { liveSessionRoutes } from '../sessions/live-session-routes.js';
import { presenceRoutes } from '../presence/presence-routes.js';
import { taskRunsRoutes } from '../runs/task-runs-routes.js';
import { accessLog } from './access-log.js';
import { apiDocsRoutes } from './api-docs.js';
import { metricsRoute } from './metrics-route.js';
import type { GaugeSources } from '../metrics.js';

export interface AppDeps {
  auth: AuthService;
  runs: RunService;
  sessions: LiveSessionService;
  grants: WriteGrantService;
  terminal: TerminalService;
  audit: AuditLog;
  /** Signs audit heads; its public key is served at GET /api/audit/public-key. */
  auditAnchor: AuditAnchor;
  control: ControlService;
  messages: MessageService;
  /** Who watches each run; operators kick one viewer. */
  presence: PresenceService;
  approvals: ApprovalService;
  webhooks: WebhookService;
  /** Disconnects the sockets of a revoked token. */
  notifier: Pick<Notifier, 'disconnectToken'>;
  log: Logger;
  /** Readiness probe of the hub's dependencies (DB, Redis). */
  ready: () => Promise<Record<string, boolean>>;
  /** True once the node is shutting down: readiness is 503 whatever the dependencies say. */
  draining?: () => boolean;
  /** Per-IP, failed-authentication and per-principal budgets. */
  limits: RateLimits;
  /** TRUST_PROXY_HOPS: reverse proxies whose X-Forwarded-For entry names the client. */
  trustedProxyHops: number;
  /** Origins allowed to call the API from a browser besides the hub's own (CORS). */
  allowedOrigins: string[];
  /** Built dashboard assets; served with an index.html fallback when present. */
  webDir?: string | undefined;
  /** HANDOFF_METRICS_TOKEN: a scraper's bearer token for /metrics (admins' tokens work too). */
  metricsToken?: string | undefined;
  /** Scrape-time sources of the gauges; absent → /metrics is not served. */
  gauges?: GaugeSources | undefined;
  /** Version shown in the OpenAPI document. */
  version?: string;
}

export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  app.use(accessLog(deps.log));
  app.use(
    helmet({
      // xterm.js sets inline styles; scripts stay same-origin only.
      contentSecurityPolicy: { directives: { 'style-src': ["'self'", "'unsafe-inline'"], 'connect-src': ["'self'"] } },
    }),
  );
  // CORS only for explicitly allowed origins; the dashboard itself is same-origin. Auth is
  // a bearer header (never a cookie), so a foreign page cannot ride on a user's session.
  app.use('/api', (req, res, next) => {
    const origin = req.headers.origin;
    if (origin && deps.allowedOrigins.includes(origin)) {
      res.setHeader('access-control-allow-origin', origin);
      res.setHeader('vary', 'Origin');
      res.setHeader('access-control-allow-headers', 'authorization, content-type');
      res.setHeader('access-control-allow-methods', 'GET, POST');
      if (req.method === 'OPTIONS') return void res.status(204).end();
    }
    next();
  });

  app.get('/healthz', (_req, res) => {
    res.json({ ok: true });
  });
  app.get('/readyz', async (_req, res) => {
    if (deps.draining?.()) return void res.status(503).json({ ok: false, draining: true, checks: {} });
    const checks = await deps.ready();
    const ok = Object.values(checks).every(Boolean);
    res.status(ok ? 200 : 503).json({ ok, checks });
  });

  if (deps.gauges) app.get('/metrics', metricsRoute(deps.auth, deps.metricsToken, deps.gauges));
  // Public: the API's description reveals no data (mounted before the api router's auth).
  app.use('/api', apiDocsRoutes(deps.version ?? '0.1.0'));
  app.use('/api', auditPublicKeyRoute(deps.auditAnchor));

  const api = express.Router();
  // Before the body is parsed and the token looked up (a flood must cost neither).
  api.use(throttle(deps.limits, deps.trustedProxyHops));
  api.use(
    express.json({
      limit: '256kb',
      // Invalid UTF-8 would be stored as U+FFFD: refuse it instead (errors.ts answers 400).
      // Checked natively, without decoding the body a second time.
      verify: (_req, _res, buf) => {
        if (!isUtf8(buf)) throw Object.assign(new Error('request body is not valid UTF-8'), { type: 'encoding.invalid', status: 400 });
      },
    }),
  );
  api.use(authenticate(deps.auth, deps.limits));
  api.get('/auth/whoami', (_req, res) => {
    const p = principalOf(res)!;
    const body: Whoami = { kind: p.kind, id: p.id, name: p.name, role: p.kind === 'user' ? p.role : null };
    res.json(body);
  });
  api.use('/task-runs/:id', liveSessionRoutes(deps.sessions, deps.grants));
  api.use('/task-runs/:id', auditRoutes(deps.audit, deps.runs, deps.terminal));
  api.use('/task-runs/:id', controlRoutes(deps.control, deps.messages, deps.runs));
  api.use('/task-runs/:id', presenceRoutes(deps.presence));
  api.use('/task-runs', taskRunsRoutes(deps.runs));
  api.use('/approvals', approvalRoutes(deps.approvals));
  api.use(tokenRoutes(deps.auth, deps.notifier));
  api.use('/webhooks', webhookRoutes(deps.webhooks));
  api.use((req) => {
    throw new AppError({ code: ErrorCode.NOT_FOUND, message: `no route ${req.method} /api${req.path}` });
  });
  app.use('/api', api);

  if (deps.webDir && existsSync(path.join(deps.webDir, 'index.html'))) {
    const webDir = path.resolve(deps.webDir);
    app.use(express.static(webDir, { index: 'index.html', maxAge: '1h' }));
    app.get(/^\/(?!api\/|socket\.io\/).*/, (_req, res) => {
      res.sendFile(path.join(webDir, 'index.html'));
    });
  }

  app.use(errorBoundary(deps.log));
  return app;
}
