import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Server } from 'socket.io';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { NAMESPACE, type Frame } from '@handoff/shared';
import type { ServerConfig } from './config.js';
import { em, openDatabase, type Orm } from './db/orm.js';
import { createApp } from './http/app.js';
import { createLogger, type Logger } from './logger.js';
import { AuditLog } from './services/audit.js';
import { AuthService } from './services/auth.js';
import { LiveSessionService, type LiveSessionOptions } from './services/live-sessions.js';
import { RunService } from './services/runs.js';
import { Scheduler } from './services/scheduler.js';
import { loadSecretKey, SecretBox } from './services/secret-box.js';
import { redisLeadership, soleLeader } from './services/leader.js';
import { Sweeper } from './services/sweeper.js';
import { RateLimiter } from './services/rate-limiter.js';
import { ControlService } from './services/control.js';
import { WriteGrantService } from './services/write-grants.js';
import { MessageService } from './services/messages.js';
import { ApprovalService } from './services/approvals.js';
import { PolicyGate } from './services/policy-gate.js';
import { loadPolicy } from './services/policy-loader.js';
import { controlBodySchema, grantWriteBodySchema, type CreateRunBody, type Provider } from '@handoff/shared';
import { TerminalService } from './services/terminal.js';
import { setupDashboardNamespace } from './socket/dashboard-namespace.js';
import { PEER_TIMEOUT_MS, type DashboardNamespace, type WorkerNamespace } from './socket/namespaces.js';
import { SocketNotifier } from './socket/socket-notifier.js';
import { setupWorkerNamespace } from './socket/worker-namespace.js';
import { observedLeadership, gaugeSources } from './metrics-sources.js';

const DEFAULT_WEB_DIR = fileURLToPath(new URL('../../web/dist', import.meta.url));

/** How often the scheduler re-checks the queue even without a push (safety net). */
const SCHEDULER_TICK_MS = 5000;

export interface Hub {
  url: string;
  port: number;
  orm: Orm;
  io: Server;
  http: HttpServer;
  auth: AuthService;
  runs: RunService;
  terminal: TerminalService;
  sessions: LiveSessionService;
  sweeper: Sweeper;
  log: Logger;
  close(): Promise<void>;
}

/** Starts one hub node: database (migrated), HTTP API, socket namespaces, scheduler. */
export async function createHub(config: ServerConfig, opts: { logger?: Logger } = {}): Promise<Hub> {
  const log = opts.logger ?? createLogger(config.LOG_LEVEL);
  const orm = await openDatabase({ databaseUrl: config.DATABASE_URL, dataDir: config.HANDOFF_DATA_DIR });

  const http = createServer();
  const io = new Server(http, {
    transports: ['websocket'],
    // Frames are ≤ 32 KiB; the largest client message is a batch of resent frames.
    maxHttpBufferSize: 8 * 1024 * 1024,
    serveClient: false,
  });
  let redis: { pub: Redis; sub: Redis } | null = null;
  if (config.REDIS_URL) {
    const pub = new Redis(config.REDIS_URL, { lazyConnect: false, maxRetriesPerRequest: 2 });
    const sub = pub.duplicate();
    redis = { pub, sub };
    // requestsTimeout bounds inter-node questions (e.g. pending frames for a late joiner).
    io.adapter(createAdapter(pub, sub, { key: config.REDIS_KEY_PREFIX, requestsTimeout: PEER_TIMEOUT_MS }));
  }
  const dashboardNsp: DashboardNamespace = io.of(NAMESPACE.dashboard);
  const workerNsp: WorkerNamespace = io.of(NAMESPACE.worker);

  // The notifier kicks the scheduler, which is built from services that need the notifier.
  const notifier = new SocketNotifier(dashboardNsp, workerNsp, !!redis, () => void scheduler.kick());
  const auth = new AuthService(orm);
  const runs = new RunService(orm, notifier, { liveSessionDefault: config.LIVE_SESSION_ENABLED_DEFAULT });
  const secretBox = new SecretBox(loadSecretKey({ configured: config.HANDOFF_SECRET_KEY, dataDir: config.HANDOFF_DATA_DIR }));
  const sessions = new LiveSessionService(orm, notifier, secretBox, log.child({ module: 'live-sessions' }), liveSessionOptions(config));
  runs.sessions = sessions;
  // Deny by default: every user command passes the policy (HANDOFF_POLICY or the shipped default).
  const gate = new PolicyGate(orm, loadPolicy(config.HANDOFF_POLICY));
  const approvals = new ApprovalService(orm, notifier, config.APPROVAL_TIMEOUT);
  gate.approvals = approvals;
  runs.gate = gate;
  sessions.gate = gate;
  sessions.runOwner = runs;
  const grants = new WriteGrantService(orm, notifier, runs, sessions, secretBox, log.child({ module: 'write-grants' }), {
    ttlMs: config.LIVE_RW_GRANT_TTL,
    maxTtlMs: config.LIVE_RW_GRANT_MAX_TTL,
  });
  grants.gate = gate;
  sessions.onEnded = (sessionId, reason) => void grants.onSessionEnded(sessionId, reason).catch((err) => log.error({ err, sessionId }, 'could not end the write grants of an ended session'));
  const control = new ControlService(orm, runs, grants, notifier, { softGraceMs: config.PAUSE_SOFT_GRACE });
  control.gate = gate;
  registerApprovedCommands(approvals, runs, sessions, grants, control);
  const messages = new MessageService(orm, notifier, log.child({ module: 'messages' }));
  messages.gate = gate;
  const leadership = observedLeadership(redis ? redisLeadership(redis.pub, `${config.REDIS_KEY_PREFIX}:sweeper`, 5000) : soleLeader);
  const sweeper = new Sweeper(orm, sessions, runs, notifier, leadership, log.child({ module: 'sweeper' }), {
    intervalMs: config.SWEEP_INTERVAL,
    graceMs: config.LIVE_GRACE,
    startTimeoutMs: config.LIVE_PROVIDER_START_TIMEOUT,
    workerLostAfterMs: config.WORKER_LOST_AFTER,
    chores: [() => approvals.expireDue(), () => grants.expireDue()],
  });
  sessions.onCreated = (sessionId) => void sweeper.graceWarnings(sessionId).catch((err) => log.error({ err }, 'grace check failed'));
  const terminal = new TerminalService(orm, notifier, log.child({ module: 'terminal' }), {
    flushMs: config.RECORDING_FLUSH,
    peerPending: redis
      ? async (runId) => {
          const replies = await dashboardNsp.serverSideEmitWithAck('term:pending', runId).catch((err: Error) => {
            log.warn({ err: err.message, runId }, 'a hub node did not answer for pending frames');
            return [] as Frame[][];
          });
          return replies.flat();
        }
      : undefined,
  });
  const scheduler = new Scheduler(orm, runs, log.child({ module: 'scheduler' }));

  const allowedOrigins = (config.HANDOFF_ALLOWED_ORIGINS ?? '').split(',').map((o) => o.trim()).filter(Boolean);
  setupDashboardNamespace(dashboardNsp, {
    auth, runs, terminal, grants, log, allowedOrigins,
    limiter: new RateLimiter({ perSecond: config.RATE_LIMIT_SOCKET_PER_SEC, burst: config.RATE_LIMIT_SOCKET_BURST }),
  });
  setupWorkerNamespace(workerNsp, {
    orm, auth, runs, scheduler, terminal, log, control, messages,
    heartbeatIntervalMs: config.HEARTBEAT_INTERVAL,
    abandonAfterMs: config.WORKER_LOST_AFTER + config.WORKER_RECLAIM_GRACE,
    assignAckTimeoutMs: config.ASSIGN_ACK_TIMEOUT,
  });

  const app = createApp({
    auth, runs, sessions, grants, terminal, log,
    audit: new AuditLog(orm, gate),
    control,
    messages,
    limiter: new RateLimiter({ perSecond: config.RATE_LIMIT_REST_PER_SEC, burst: config.RATE_LIMIT_REST_BURST }),
    allowedOrigins,
    approvals,
    webDir: config.HANDOFF_WEB_DIR ?? DEFAULT_WEB_DIR,
    metricsToken: config.HANDOFF_METRICS_TOKEN,
    gauges: gaugeSources(orm, io, leadership),
    ready: async () => {
      const checks: Record<string, boolean> = {};
      checks.database = await em(orm).execute('select 1').then(() => true, () => false);
      if (redis) checks.redis = await redis.pub.ping().then((r) => r === 'PONG', () => false);
      return checks;
    },
  });
  http.on('request', app);

  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(config.PORT, config.HOST, () => resolve());
  });
  const port = (http.address() as AddressInfo).port;
  const tick = setInterval(() => void scheduler.kick(), SCHEDULER_TICK_MS);
  tick.unref();
  sweeper.start();
  log.info({ port, database: config.DATABASE_URL ? 'postgresql' : 'pglite', redis: !!redis }, 'hub listening');

  return {
    url: `http://${config.HOST === '0.0.0.0' ? '127.0.0.1' : config.HOST}:${port}`,
    port, orm, io, http, auth, runs, terminal, sessions, sweeper, log,
    async close() {
      clearInterval(tick);
      await sweeper.stop();
      io.disconnectSockets(true);
      await new Promise<void>((resolve) => io.close(() => resolve()));
      await terminal.closeAll();
      if (redis) {
        redis.pub.disconnect();
        redis.sub.disconnect();
      }
      await orm.close();
    },
  };
}


/** What an approval replays, as the requester, once approved. */
function registerApprovedCommands(approvals: ApprovalService, runs: RunService, sessions: LiveSessionService, grants: WriteGrantService, control: ControlService): void {
  const approved = { approved: true };
  const session = (runId: string | null) => runId ?? '';
  approvals.register('run.create', (actor, _runId, p) => runs.create(actor, p.body as CreateRunBody, approved));
  approvals.register('run.cancel', (actor, runId, p) => runs.cancel(actor, session(runId), (p.reason as string | null) ?? undefined, approved));
  const create = (actor: Parameters<typeof sessions.create>[0], runId: string | null, p: Record<string, unknown>) =>
    sessions.create(actor, session(runId), { provider: p.provider as Provider, ttlMinutes: (p.ttlMinutes as number | null) ?? undefined, switch: p.switch === true }, approved).then((r) => ({ session: r.session }));
  approvals.register('session.create', create);
  approvals.register('session.create.external', create);
  approvals.register('session.extend', (actor, runId, p) =>
    sessions.extend(actor, session(runId), { ttlMinutes: p.ttlMinutes as number, provider: (p.provider as Provider | undefined) ?? undefined }, approved));
  // The outcome is shown to approvers: an approved grant carries no attach data (the grantee reveals it).
  approvals.register('rw.grant', (actor, runId, p) => grants.grantApproved(actor, session(runId), grantWriteBodySchema.parse(p)));
  const replayControl = (actor: Parameters<typeof control.apply>[0], runId: string | null, p: Record<string, unknown>, approvalId: string) =>
    control.apply(actor, session(runId), controlBodySchema.parse(p), { approved: true, correlationId: approvalId });
  for (const action of ['takeover', 'handback', 'control.pause', 'control.resume'] as const) approvals.register(action, replayControl);
}

function liveSessionOptions(config: ServerConfig): LiveSessionOptions {
  const fingerprints = {
    ...(config.LIVE_RELAY_RSA_FINGERPRINT ? { rsa: config.LIVE_RELAY_RSA_FINGERPRINT } : {}),
    ...(config.LIVE_RELAY_ED25519_FINGERPRINT ? { ed25519: config.LIVE_RELAY_ED25519_FINGERPRINT } : {}),
  };
  return {
    ttlMs: config.LIVE_SESSION_TTL,
    maxTtlMs: config.LIVE_SESSION_MAX_TTL,
    graceMs: config.LIVE_GRACE,
    startTimeoutMs: config.LIVE_PROVIDER_START_TIMEOUT,
    defaultProvider: config.LIVE_SESSION_PROVIDER,
    enabledByDefault: config.LIVE_SESSION_ENABLED_DEFAULT,
    maxPerRun: config.LIVE_MAX_SHARES_PER_RUN,
    maxPerWorker: config.LIVE_MAX_CONCURRENT_PER_WORKER,
    allowWeb: config.LIVE_ALLOW_WEB,
    heartbeatGraceMs: 2 * config.HEARTBEAT_INTERVAL,
    relay: config.LIVE_RELAY_HOST ? { host: config.LIVE_RELAY_HOST, port: config.LIVE_RELAY_PORT ?? null, fingerprints } : null,
  };
}
