import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Server } from 'socket.io';
import { ErrorCode, NAMESPACE, rooms, systemClock, type Clock, type Frame } from '@handoff/shared';
import type { ServerConfig } from './config.js';
import { em, openDatabase, type Orm } from './infra/db/orm.js';
import { createApp } from './http/app.js';
import { createLogger, type Logger } from './logger.js';
import { RedisLink } from './infra/redis.js';
import { AuditLog } from './audit/audit-log.js';
import { AuditAnchor, loadAuditSigningKey } from './audit/audit-anchor.js';
import { AuthService, type Principal } from './auth/auth-service.js';
import { LiveSessionService, type LiveSessionOptions } from './sessions/live-session-service.js';
import { RunService } from './runs/run-service.js';
import { Scheduler } from './workers/scheduler.js';
import { loadSecretKey, SecretBox } from './infra/secret-box.js';
import { redisLeadership, soleLeader } from './infra/leader.js';
import { Sweeper } from './sweeper/sweeper.js';
import { WorkerPresence } from './workers/worker-presence.js';
import { RateLimiter } from './infra/rate-limiter.js';
import { RateLimits } from './infra/rate-limits.js';
import { ControlService } from './control/control-service.js';
import { WriteGrantService } from './grants/write-grant-service.js';
import { MessageService } from './messages/message-service.js';
import { ApprovalService } from './approvals/approval-service.js';
import { PolicyEvaluator, PolicyGate } from './policy/policy-gate.js';
import { HubEvents } from './hooks/hub-events.js';
import { loadPolicy } from './policy/policy-loader.js';
import { controlBodySchema, grantWriteBodySchema, type CreateRunBody, type Provider } from '@handoff/shared';
import { TerminalService } from './terminal/terminal-service.js';
import { setupDashboardNamespace } from './socket/dashboard-namespace.js';
import { PEER_TIMEOUT_MS, type DashboardNamespace, type WorkerNamespace } from './socket/namespaces.js';
import { SocketNotifier } from './socket/socket-notifier.js';
import { setupWorkerNamespace } from './socket/worker-namespace.js';
import { MemoryPresenceStore, PresenceService, RedisPresenceStore } from './presence/presence-service.js';
import { SocketPresenceFanout } from './socket/presence-fanout.js';
import { cutConnection, LagGuard } from './socket/lag-guard.js';
import { handshakeError } from './socket/on.js';
import { observedLeadership, gaugeSources } from './metrics-sources.js';
import { WebhookService } from './webhooks/webhook-service.js';
import { withWebhookEvents } from './webhooks/webhook-events.js';

const DEFAULT_WEB_DIR = fileURLToPath(new URL('../../web/dist', import.meta.url));
/** How long a draining node waits for its clients to answer the websocket's close before it cuts them. */
const DRAIN_CLOSE_GRACE_MS = 1000;

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
  scheduler: Scheduler;
  log: Logger;
  /**
   * Graceful drain (SIGTERM): /readyz 503 and new sockets refused at once; after `noticeMs`
   * (default 0) the listener closes; the scheduler tick and the sweeper stop (lease
   * released); workers are cut loose to fail over to another node; recordings are flushed;
   * dashboards are told to reconnect; then Redis and the database close. Idempotent.
   */
  close(opts?: { noticeMs?: number }): Promise<void>;
}

/** Starts one hub node: database (migrated), HTTP API, socket namespaces, scheduler. */
export async function createHub(config: ServerConfig, opts: { logger?: Logger; clock?: Clock } = {}): Promise<Hub> {
  const log = opts.logger ?? createLogger(config.LOG_LEVEL);
  // What the process decides about time goes through one clock; tests may pass a ManualClock.
  const clock = opts.clock ?? systemClock;
  const orm = await openDatabase({
    databaseUrl: config.DATABASE_URL,
    dataDir: config.HANDOFF_DATA_DIR,
    connectTimeoutMs: config.DATABASE_CONNECT_TIMEOUT,
    // With an owner URL for migrations, DATABASE_URL is the least-privilege hub role: it
    // cannot (and must not) migrate; it refuses to start on a schema that is behind.
    migrate: !(config.DATABASE_URL && config.MIGRATION_DATABASE_URL),
  });
  const auditAnchor = new AuditAnchor(orm, loadAuditSigningKey({ configured: config.HANDOFF_AUDIT_SIGNING_KEY, dataDir: config.HANDOFF_DATA_DIR }), log.child({ module: 'audit-anchor' }), clock, {
    intervalMs: config.AUDIT_CHECKPOINT_INTERVAL,
  });
  if (config.REDIS_URL && !config.HANDOFF_AUDIT_SIGNING_KEY) {
    // Each node would sign with its own generated key: heads would verify only against that node's public key.
    log.warn('HANDOFF_AUDIT_SIGNING_KEY is unset on a multi-node hub: set the same key on every node (docs/audit.md)');
  }

  const http = createServer();
  const io = new Server(http, {
    transports: ['websocket'],
    // Frames are ≤ 32 KiB; the largest client message is a batch of resent frames.
    maxHttpBufferSize: 8 * 1024 * 1024,
    serveClient: false,
  });
  const redis = config.REDIS_URL ? new RedisLink(config.REDIS_URL, log.child({ module: 'redis' })) : null;
  if (redis) {
    await redis.ready();
    // requestsTimeout bounds inter-node questions (e.g. pending frames for a late joiner).
    io.adapter(redis.adapter({ key: config.REDIS_KEY_PREFIX, requestsTimeout: PEER_TIMEOUT_MS }));
  }
  const dashboardNsp: DashboardNamespace = io.of(NAMESPACE.dashboard);
  const workerNsp: WorkerNamespace = io.of(NAMESPACE.worker);

  // Set by close(): the node is leaving; it takes no new sockets and places no new runs.
  let draining = false;
  for (const nsp of [dashboardNsp, workerNsp] as const) {
    // Registered before the namespaces' own auth: a refused client tries another node at once.
    nsp.use((_socket, next) => next(draining ? handshakeError(ErrorCode.UNAVAILABLE, 'this hub node is shutting down') : undefined));
    // Admitted: the upgrade request (an IncomingMessage, ~2 KB with its parser state) is not
    // needed any more — the handshake kept its headers and address — and an idle worker
    // socket would hold it for as long as it stays connected.
    nsp.on('connection', (socket) => {
      (socket.conn as unknown as { request: unknown }).request = null;
    });
  }

  const secretBox = new SecretBox(loadSecretKey({ configured: config.HANDOFF_SECRET_KEY, dataDir: config.HANDOFF_DATA_DIR }));
  const webhooks = new WebhookService(orm, secretBox, log.child({ module: 'webhooks' }), clock, {
    retryBaseMs: config.WEBHOOK_RETRY_BASE,
    maxAgeMs: config.WEBHOOK_MAX_AGE,
    pollIntervalMs: config.WEBHOOK_POLL_INTERVAL,
    timeoutMs: config.WEBHOOK_TIMEOUT,
    publicUrl: config.HANDOFF_PUBLIC_URL ?? null,
  });
  // The notifier kicks the scheduler, which is built from services that need the notifier.
  // Every service's post-commit pushes also become webhook events (see webhook-events.ts).
  const notifier = withWebhookEvents(
    new SocketNotifier(dashboardNsp, workerNsp, !!redis, (created) => {
      if (!draining) void scheduler.queued(created);
    }),
    webhooks,
  );
  const auth = new AuthService(orm, clock);
  // Deny by default: every user command passes the policy (HANDOFF_POLICY or the shipped default).
  const policy = new PolicyEvaluator(loadPolicy(config.HANDOFF_POLICY), clock);
  const approvals = new ApprovalService(orm, notifier, policy, clock, config.APPROVAL_TIMEOUT);
  const gate = new PolicyGate(orm, policy, approvals, clock);
  // Cross-feature reactions go through one typed bus, wired below once every service exists.
  const events = new HubEvents();
  const sessions = new LiveSessionService(orm, notifier, gate, events, clock, secretBox, log.child({ module: 'live-sessions' }), liveSessionOptions(config));
  const runs = new RunService(orm, notifier, gate, events, clock, { liveSessionDefault: config.LIVE_SESSION_ENABLED_DEFAULT });
  const grants = new WriteGrantService(orm, notifier, gate, clock, runs, sessions, secretBox, log.child({ module: 'write-grants' }), {
    ttlMs: config.LIVE_RW_GRANT_TTL,
    maxTtlMs: config.LIVE_RW_GRANT_MAX_TTL,
  });
  const control = new ControlService(orm, runs, grants, notifier, gate, clock, { softGraceMs: config.PAUSE_SOFT_GRACE });
  registerApprovedCommands(approvals, runs, sessions, grants, control);
  const messages = new MessageService(orm, notifier, gate, clock, log.child({ module: 'messages' }));
  const workerPresence = new WorkerPresence(orm, {
    clock,
    flushMs: config.HEARTBEAT_FLUSH,
    log: log.child({ module: 'worker-presence' }),
    onHeardAgain: async (workerId) => {
      const kept = await runs.reclaim(workerId, 'heartbeat');
      log.warn({ workerId, reclaimed: kept }, 'lost worker heard again within the reclaim grace');
    },
  });
  const leadership = observedLeadership(redis ? redisLeadership(redis.pub, `${config.REDIS_KEY_PREFIX}:sweeper`, 5000, (err) => redis.failed(err, 'sweeper lease')) : soleLeader);
  const sweeper = new Sweeper(orm, sessions, runs, notifier, leadership, log.child({ module: 'sweeper' }), clock, {
    intervalMs: config.SWEEP_INTERVAL,
    graceMs: config.LIVE_GRACE,
    startTimeoutMs: config.LIVE_PROVIDER_START_TIMEOUT,
    workerLostAfterMs: config.WORKER_LOST_AFTER,
    reclaimGraceMs: config.WORKER_RECLAIM_GRACE,
    flushHeard: () => flushHeardEverywhere(),
    chores: [
      () => approvals.expireDue(),
      () => approvals.executeApproved(),
      () => grants.expireDue(),
      () => auditAnchor.checkpointGrown().then(() => undefined),
      // Sockets outlive their handshake: those of a token that just expired or was revoked (CLI) are cut off.
      async () => {
        for (const tokenId of await auth.recentlyInvalidated(60_000)) notifier.disconnectToken(tokenId);
      },
    ],
  });
  // A run's live sessions start and end with it; a session's write grants end with it.
  events.on('run.started', ({ run, repeat }) => sessions.onRunStarted(run, { repeat }));
  events.on('run.ended', ({ runId, reason, code }) => sessions.endAllForRun(runId, reason, code));
  events.on('session.ended', ({ sessionId, reason }) => void grants.onSessionEnded(sessionId, reason).catch((err) => log.error({ err, sessionId }, 'could not end the write grants of an ended session')));
  // A new or extended session may already be inside its grace window.
  events.on('session.created', ({ sessionId }) => void sweeper.graceWarnings(sessionId).catch((err) => log.error({ err }, 'grace check failed')));
  // A run's chain is anchored when it ends: a signed checkpoint of its final head.
  events.on('run.exited', ({ runId }) => void auditAnchor.checkpoint(runId).catch((err) => log.error({ err, runId }, 'could not checkpoint the audit chain of an ended run')));
  const terminal = new TerminalService(orm, notifier, log.child({ module: 'terminal' }), clock, {
    flushMs: config.RECORDING_FLUSH,
    peerPending: redis
      ? async (runId) => {
          // Without Redis no peer can answer; and the adapter never settles this call when
          // its PUBSUB NUMSUB fails, so it is bounded here too.
          if (!redis.up) return [];
          let timer: NodeJS.Timeout | undefined;
          const replies = await Promise.race([
            dashboardNsp.serverSideEmitWithAck('term:pending', runId),
            new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('no answer in time')), PEER_TIMEOUT_MS + 500))),
          ])
            .catch((err: Error) => {
              log.warn({ err: err.message, runId }, 'a hub node did not answer for pending frames');
              return [] as Frame[][];
            })
            .finally(() => clearTimeout(timer));
          return replies.flat();
        }
      : undefined,
  });
  const scheduler = new Scheduler(orm, runs, notifier, log.child({ module: 'scheduler' }), { clock });

  /** This node's unwritten heartbeats, then every other node's (bounded wait: a node that does not answer is not receiving either). */
  async function flushHeardEverywhere(): Promise<void> {
    await workerPresence.flush();
    if (!redis?.up) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      workerNsp.serverSideEmitWithAck('presence:flush'),
      new Promise((resolve) => (timer = setTimeout(resolve, PEER_TIMEOUT_MS + 500))),
    ])
      .catch((err: Error) => log.warn({ err: err.message }, 'a hub node did not flush its heartbeats in time'))
      .finally(() => clearTimeout(timer));
  }
  // Asked by the sweeping node before it judges workers silent.
  workerNsp.on('presence:flush', (reply) => {
    workerPresence.flush().then(() => reply(true), () => reply(false));
  });

  const limits = new RateLimits(
    {
      ipPerSec: config.RATE_LIMIT_IP_PER_SEC,
      authFailuresPerMin: config.RATE_LIMIT_AUTH_FAILURES,
      authBlockMs: config.RATE_LIMIT_AUTH_BLOCK,
      restPerSec: config.RATE_LIMIT_REST_PER_SEC,
      restBurst: config.RATE_LIMIT_REST_BURST,
    },
    // pub fails fast while disconnected: the limiters fall back to memory, never wait.
    redis ? { redis: redis.pub, keyPrefix: config.REDIS_KEY_PREFIX } : null,
  );
  const throttle = { limits, trustedHops: config.TRUST_PROXY_HOPS };
  const allowedOrigins = (config.HANDOFF_ALLOWED_ORIGINS ?? '').split(',').map((o) => o.trim()).filter(Boolean);
  // The fanout tells this node's presence to forget connections a kick on any node cut.
  const presenceFanout = new SocketPresenceFanout(dashboardNsp, (runId, connIds) => presence.dropLocal(runId, connIds));
  const presence = new PresenceService(
    orm,
    redis ? new RedisPresenceStore(redis.pub, config.REDIS_KEY_PREFIX) : new MemoryPresenceStore(clock),
    presenceFanout, gate, grants, clock, log.child({ module: 'presence' }),
  );
  presence.start();
  setupDashboardNamespace(dashboardNsp, {
    auth, runs, sessions, terminal, grants, presence, log, allowedOrigins, throttle,
    limiter: new RateLimiter({ perSecond: config.RATE_LIMIT_SOCKET_PER_SEC, burst: config.RATE_LIMIT_SOCKET_BURST }),
  });
  const lagGuard = new LagGuard(dashboardNsp, log.child({ module: 'lag-guard' }), clock, { maxBufferedBytes: config.VIEWER_MAX_QUEUED_BYTES, stuckAfterMs: config.VIEWER_STUCK_AFTER });
  lagGuard.start();
  setupWorkerNamespace(workerNsp, {
    auth, runs, sessions, scheduler, terminal, log, control, messages, throttle,
    presence: workerPresence,
    heartbeatIntervalMs: config.HEARTBEAT_INTERVAL,
    helloConcurrency: config.HELLO_CONCURRENCY,
    workerLostAfterMs: config.WORKER_LOST_AFTER,
    clock,
    abandonAfterMs: config.WORKER_LOST_AFTER + config.WORKER_RECLAIM_GRACE,
    assignAckTimeoutMs: config.ASSIGN_ACK_TIMEOUT,
  });

  // Every socket joins its token's room: a revoked or expired token's sockets can be cut off on every node.
  for (const nsp of [dashboardNsp, workerNsp] as Array<DashboardNamespace | WorkerNamespace>) {
    nsp.on('connection', (socket) => void socket.join(rooms.token((socket.data.principal as Principal).tokenId)));
  }
  const app = createApp({
    auth, runs, sessions, grants, terminal, log, notifier,
    audit: new AuditLog(orm, gate, auditAnchor),
    auditAnchor,
    control,
    messages,
    presence,
    limits,
    trustedProxyHops: config.TRUST_PROXY_HOPS,
    allowedOrigins,
    approvals,
    webhooks,
    webDir: config.HANDOFF_WEB_DIR ?? DEFAULT_WEB_DIR,
    draining: () => draining,
    metricsToken: config.HANDOFF_METRICS_TOKEN,
    gauges: gaugeSources(orm, io, leadership),
    ready: async () => {
      const checks: Record<string, boolean> = {};
      checks.database = await em(orm).execute('select 1').then(() => true, () => false);
      if (redis) checks.redis = await redis.ping();
      return checks;
    },
  });
  http.on('request', app);

  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(config.PORT, config.HOST, () => resolve());
  });
  const port = (http.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  // The safety recheck of the queue: one claim attempt per period, and none while no worker here has room.
  const recheck = clock
    .setInterval(() => {
      if (!draining) void scheduler.queued();
    }, config.SCHEDULER_RECHECK)
    .unref();
  workerPresence.start();
  sweeper.start();
  webhooks.start();
  log.info({ port, database: config.DATABASE_URL ? 'postgresql' : 'pglite', redis: !!redis }, 'hub listening');

  return {
    url: `http://${config.HOST === '0.0.0.0' ? '127.0.0.1' : config.HOST}:${port}`,
    port, orm, io, http, auth, runs, terminal, sessions, sweeper, scheduler, log,
    close(opts = {}) {
      closing ??= drain(opts.noticeMs ?? 0);
      return closing;
    },
  };

  async function drain(noticeMs: number): Promise<void> {
    const started = Date.now();
    draining = true;
    recheck.cancel();
    lagGuard.stop();
    // This node's viewers reconnect to another node and reappear there.
    await presence.stop();
    log.info({ noticeMs }, 'draining: readiness is 503, new sockets are refused');
    // The sweep in progress ends and the lease is released, so another node sweeps at once.
    const sweeperStopped = sweeper.stop();
    if (noticeMs > 0) await new Promise((r) => setTimeout(r, noticeMs));
    // No new connections; requests on open ones are still answered.
    http.close();
    http.closeIdleConnections();
    await sweeperStopped;
    // Attempts in flight finish (or their claims lapse and another node retries them).
    await webhooks.stop();
    // Workers first: each fails over to another node and resends there what was not acked.
    // Closing the transport (not a socket.io "server disconnect") makes every client retry.
    const workers = [...workerNsp.sockets.values()];
    for (const socket of workers) socket.conn.close();
    // Whatever was accepted on this node is written before the database closes.
    await terminal.closeAll();
    await workerPresence.stop();
    const dashboards = [...dashboardNsp.sockets.values()];
    for (const socket of dashboards) socket.conn.close();
    // A client that stopped reading never answers its websocket's close, which would hold the
    // drain (and this node's exit) for ws's 30 s close timeout: after a moment, what is left is cut.
    const cutStragglers = setTimeout(() => {
      for (const socket of [...workers, ...dashboards]) cutConnection(socket.conn);
    }, DRAIN_CLOSE_GRACE_MS);
    await new Promise<void>((resolve) => io.close(() => resolve()));
    clearTimeout(cutStragglers);
    http.closeAllConnections();
    await redis?.close();
    await orm.close();
    log.info({ tookMs: Date.now() - started, workers: workers.length, dashboards: dashboards.length }, 'drained');
  }
}


/**
 * What an approval replays, as the requester, once approved. Each command runs with the
 * approval's id as its correlation id: its audit rows name the approval, which is also how
 * a recovery after a crash tells a command that already ran.
 */
function registerApprovedCommands(approvals: ApprovalService, runs: RunService, sessions: LiveSessionService, grants: WriteGrantService, control: ControlService): void {
  const as = (approvalId: string) => ({ approved: true, correlationId: approvalId });
  const run = (runId: string | null) => runId ?? '';
  approvals.register('run.create', (actor, _runId, p, id) => runs.create(actor, p.body as CreateRunBody, as(id)));
  approvals.register('run.cancel', (actor, runId, p, id) => runs.cancel(actor, run(runId), (p.reason as string | null) ?? undefined, as(id)));
  const create = (actor: Parameters<typeof sessions.create>[0], runId: string | null, p: Record<string, unknown>, id: string) =>
    sessions
      .create(actor, run(runId), { provider: p.provider as Provider, ttlMinutes: (p.ttlMinutes as number | null) ?? undefined, switch: p.switch === true }, as(id))
      .then((r) => ({ session: r.session }));
  approvals.register('session.create', create);
  approvals.register('session.create.external', create);
  approvals.register('session.extend', (actor, runId, p, id) =>
    sessions.extend(actor, run(runId), { ttlMinutes: p.ttlMinutes as number, provider: (p.provider as Provider | undefined) ?? undefined }, as(id)));
  // The outcome is shown to approvers: an approved grant carries no attach data (the grantee reveals it).
  approvals.register('rw.grant', (actor, runId, p, id) => grants.grantApproved(actor, run(runId), grantWriteBodySchema.parse(p), id));
  const replayControl = (actor: Parameters<typeof control.apply>[0], runId: string | null, p: Record<string, unknown>, id: string) =>
    control.apply(actor, run(runId), controlBodySchema.parse(p), as(id));
  for (const action of ['takeover', 'handback', 'control.handback.force', 'control.pause', 'control.resume'] as const) approvals.register(action, replayControl);
  approvals.register('session.revoke', (actor, runId, p, id) =>
    sessions.revoke(actor, run(runId), { reason: (p.reason as string | undefined) ?? undefined, provider: (p.provider as Provider | undefined) ?? undefined }, as(id)).then((s) => ({ session: s })));
  approvals.register('rw.revoke', (actor, runId, p, id) => grants.revoke(actor, run(runId), { grantId: (p.grantId as string | undefined) ?? undefined }, as(id)));
  approvals.register('needs-operator.dismiss', (actor, runId, _p, id) => runs.dismissNeedsOperator(actor, run(runId), as(id)));
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
