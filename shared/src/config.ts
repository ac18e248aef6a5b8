import { z } from 'zod';
import { duration } from './duration.js';
import { providerSchema } from './domain.js';

const bool = (def: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no'])
    .default(def ? 'true' : 'false')
    .transform((v) => v === 'true' || v === '1' || v === 'yes');
const int = (def: number, min: number, max: number) => z.coerce.number().int().min(min).max(max).default(def);
const optionalUrl = z.string().url().optional();

/** Hub configuration (DESIGN.md §5). Parsed once from the environment at start. */
export const serverConfigSchema = z.object({
  /** HTTP port; 0 picks a free one. Default 3000. */
  PORT: int(3000, 0, 65_535),
  /** Bind address. Default 127.0.0.1 (set 0.0.0.0 in containers). */
  HOST: z.string().default('127.0.0.1'),
  /** PostgreSQL URL; unset → embedded PGlite under HANDOFF_DATA_DIR. */
  DATABASE_URL: optionalUrl,
  /**
   * Longest wait for a PostgreSQL connection (a new one, or a free one from the pool); past
   * it the call fails fast as 503 UNAVAILABLE instead of hanging while the database is down. Default 2s.
   */
  DATABASE_CONNECT_TIMEOUT: duration('2s'),
  /** Redis URL; unset → single node with the in-memory socket.io adapter. */
  REDIS_URL: optionalUrl,
  /** Prefix of the Redis channels the hub nodes share; nodes with different prefixes don't see each other. Default handoff. */
  REDIS_KEY_PREFIX: z.string().regex(/^[A-Za-z0-9:_-]{1,64}$/).default('handoff'),
  /** Where PGlite, generated keys and local state live. Default ./.data */
  HANDOFF_DATA_DIR: z.string().default('.data'),
  /** 32-byte key (hex or base64) for secrets at rest; generated into the data dir if unset. */
  HANDOFF_SECRET_KEY: z.string().optional(),
  /**
   * Ed25519 seed (32 bytes, hex or base64) the hub signs audit chain heads with; the same on
   * every node. Unset → generated into <HANDOFF_DATA_DIR>/audit-signing.key on first start.
   */
  HANDOFF_AUDIT_SIGNING_KEY: z.string().optional(),
  /** How often the sweeper leader signs checkpoints of audit chains that grew, ms. Default 1m. */
  AUDIT_CHECKPOINT_INTERVAL: duration('1m'),
  /** Policy file (YAML or JSON); unset → the shipped default policy. */
  HANDOFF_POLICY: z.string().optional(),
  /** Directory of built dashboard assets to serve; unset → web/dist if present. */
  HANDOFF_WEB_DIR: z.string().optional(),
  /** Allowed dashboard origins (comma separated); unset → same origin only. */
  HANDOFF_ALLOWED_ORIGINS: z.string().optional(),
  LIVE_SESSION_ENABLED_DEFAULT: bool(true),
  LIVE_SESSION_PROVIDER: providerSchema.default('web'),
  LIVE_SESSION_TTL: duration('60m'),
  LIVE_SESSION_MAX_TTL: duration('4h'),
  LIVE_GRACE: duration('5m'),
  LIVE_RW_GRANT_TTL: duration('15m'),
  LIVE_RW_GRANT_MAX_TTL: duration('4h'),
  LIVE_ALLOW_WEB: bool(false),
  LIVE_RELAY_HOST: z.string().optional(),
  LIVE_RELAY_PORT: z.coerce.number().int().min(1).max(65_535).optional(),
  /** Host-key fingerprints of the self-hosted tmate relay (SHA256:…). */
  LIVE_RELAY_RSA_FINGERPRINT: z.string().optional(),
  LIVE_RELAY_ED25519_FINGERPRINT: z.string().optional(),
  LIVE_PROVIDER_START_TIMEOUT: duration('15s'),
  LIVE_MAX_SHARES_PER_RUN: int(3, 1, 100),
  LIVE_MAX_CONCURRENT_PER_WORKER: int(4, 1, 1000),
  /** How often workers heartbeat. Default 3s. */
  HEARTBEAT_INTERVAL: duration('3s'),
  /**
   * A worker not heard from for this long is `lost`: its shares go ERROR at once. Default 9s
   * (three missed heartbeats), so stale shares are resolved within 10 s of the last one.
   */
  WORKER_LOST_AFTER: duration('9s'),
  /**
   * After WORKER_LOST_AFTER, how long a lost worker's runs stay `running` waiting for it to
   * come back and re-adopt them (audited `run.reclaimed`); past it they are `lost` and the
   * worker (or its dead-man switch) stops them. Default 60s.
   */
  WORKER_RECLAIM_GRACE: duration('60s'),
  /**
   * Heartbeats are acked at once and written in batches: each node writes every heartbeat it
   * heard in one statement this often. Keep it well below WORKER_LOST_AFTER − HEARTBEAT_INTERVAL;
   * the sweeper also asks every node to flush before it declares anyone lost. Default 1s.
   */
  HEARTBEAT_FLUSH: duration('1s'),
  /**
   * Worker hellos handled at once per node (each is a few queries); the others wait their
   * turn, never refused, so a fleet reconnecting at once does not starve the database pool. Default 8.
   */
  HELLO_CONCURRENCY: int(8, 1, 1000),
  /**
   * Scheduling is kicked by run creations and requeues (across nodes through Redis); this
   * slow recheck of the queue catches a kick lost with Redis. Default 10s.
   */
  SCHEDULER_RECHECK: duration('10s'),
  PAUSE_SOFT_GRACE: duration('10s'),
  APPROVAL_TIMEOUT: duration('10m'),
  /** Terminal recording writes are batched: flushed after this long (frames are broadcast at once regardless). Default 50ms. */
  RECORDING_FLUSH: duration('50ms'),
  /**
   * REST requests per API token: sustained rate per second and burst (counted in windows of
   * burst / rate seconds, cluster-wide with REDIS_URL). Defaults 20/s, burst 200.
   */
  RATE_LIMIT_REST_PER_SEC: int(20, 1, 100_000),
  RATE_LIMIT_REST_BURST: int(200, 1, 1_000_000),
  /**
   * Requests (REST and socket handshakes) per client IP per second, counted before the body is
   * parsed or a token looked up; cluster-wide with REDIS_URL. Default 500.
   */
  RATE_LIMIT_IP_PER_SEC: int(500, 1, 1_000_000),
  /**
   * Failed authentications (unknown, expired or revoked tokens) per client IP per minute,
   * cluster-wide with REDIS_URL. Past it every request from that IP is 429 RATE_LIMITED
   * before parsing or token lookup, for RATE_LIMIT_AUTH_BLOCK, doubling with each further
   * block within an hour (at most 1 h). Default 60.
   */
  RATE_LIMIT_AUTH_FAILURES: int(60, 1, 1_000_000),
  /** First block of an IP over RATE_LIMIT_AUTH_FAILURES. Default 1m. */
  RATE_LIMIT_AUTH_BLOCK: duration('1m'),
  /**
   * Reverse proxies in front of the hub that append to X-Forwarded-For (the compose file's
   * nginx: 1). The client IP is the address that many hops back; 0 = the peer's address
   * (X-Forwarded-For ignored, as a client could forge it). Default 0.
   */
  TRUST_PROXY_HOPS: int(0, 0, 10),
  /** Dashboard socket events per connection: sustained rate per second and burst. Defaults 30/s, burst 100. */
  RATE_LIMIT_SOCKET_PER_SEC: int(30, 1, 100_000),
  RATE_LIMIT_SOCKET_BURST: int(100, 1, 1_000_000),
  /** How often the sweeper (TTL, grace, start timeouts, worker loss) runs on the leader node. Default 500ms. */
  SWEEP_INTERVAL: duration('500ms'),
  /** Assignment ack timeout: a worker that does not accept a pushed run in time loses it. Default 10s. */
  ASSIGN_ACK_TIMEOUT: duration('10s'),
  /**
   * On SIGTERM, how long a draining node keeps serving REST (with /readyz already 503 and new
   * sockets refused) before it closes its listener, so a load balancer sees it leave. Default 1s.
   */
  SHUTDOWN_NOTICE: duration('1s'),
  /** Hard bound of a graceful shutdown: past it the process exits anyway (code 1). Default 9s (inside a 10 s grace). */
  SHUTDOWN_TIMEOUT: duration('9s'),
  /**
   * Owner-role PostgreSQL URL for migrations (`pnpm migrate`, `pnpm handoff db grant-hub-role`).
   * Set → the hub (DATABASE_URL, a least-privilege role) never migrates: it checks every
   * migration is applied and refuses to start otherwise. Unset → DATABASE_URL migrates.
   */
  MIGRATION_DATABASE_URL: optionalUrl,
  /** Bearer token a Prometheus scraper presents at GET /metrics (admins' tokens work too); unset → admins only. At least 16 characters. */
  HANDOFF_METRICS_TOKEN: z.string().min(16).optional(),
  /** A dashboard with more than this many bytes queued is lagging: live frames skip it until it drains (it then resyncs). Default 1 MiB. */
  VIEWER_MAX_QUEUED_BYTES: int(1024 * 1024, 1024, 1024 * 1024 * 1024),
  /** A dashboard lagging this long is disconnected. Default 30s. */
  VIEWER_STUCK_AFTER: duration('30s'),
  /** Outbound webhooks: first retry delay; each retry doubles it (±50 % jitter, at most 1 h). Default 5s. */
  WEBHOOK_RETRY_BASE: duration('5s'),
  /** Outbound webhooks: a delivery still failing this long after its event is given up (`failed`). Default 24h. */
  WEBHOOK_MAX_AGE: duration('24h'),
  /** Outbound webhooks: how often each node looks for due deliveries (new events are sent at once). Default 1s. */
  WEBHOOK_POLL_INTERVAL: duration('1s'),
  /** Outbound webhooks: one attempt's timeout; a node that claimed a delivery holds it for 3× this. Default 10s. */
  WEBHOOK_TIMEOUT: duration('10s'),
  /** The dashboard's public base URL, for links in webhook payloads (e.g. https://handoff.example.com); unset → links are paths. */
  HANDOFF_PUBLIC_URL: optionalUrl,
  /** pino level. Default info. */
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});
export type ServerConfigInput = z.input<typeof serverConfigSchema>;
export type ServerConfig = z.output<typeof serverConfigSchema>;

/** Worker configuration. */
export const workerConfigSchema = z.object({
  /**
   * Hub base URL, e.g. http://127.0.0.1:3000 — or several, comma separated (hub nodes, or one
   * load balancer): the worker fails over to the next one at once when its node goes away.
   */
  HANDOFF_URL: z
    .string()
    .refine((v) => v.split(',').every((u) => z.url().safeParse(u.trim()).success), { message: 'must be a URL or a comma-separated list of URLs' }),
  /** Worker token printed by `pnpm handoff worker-token`. */
  HANDOFF_WORKER_TOKEN: z.string().min(10),
  /** How many runs this worker runs at once. Default 2. */
  WORKER_CAPACITY: int(2, 1, 256),
  /** Where per-run tmux sockets, inboxes and logs live. Default /tmp/handoff-worker-<uid>. */
  WORKER_RUN_DIR: z.string().optional(),
  /** Terminal size of each run's tmux window. */
  WORKER_COLS: int(120, 20, 1000),
  WORKER_ROWS: int(32, 5, 500),
  /** Share provider binaries; unset → found on PATH (a missing one fails its shares clearly). */
  TMATE_BIN: z.string().optional(),
  UPTERM_BIN: z.string().optional(),
  /**
   * Variables of the worker's environment that runs inherit besides PATH, HOME, USER,
   * LOGNAME, SHELL, LANG, LANGUAGE, LC_*, TERM, TZ and TMPDIR: comma-separated names, or
   * `PREFIX_*`. Default none. The worker's token is never passed.
   */
  WORKER_PASS_ENV: z.string().optional(),
  /** Output batching: flush a frame after this many ms (≤ 16 per DESIGN.md §4). */
  FRAME_FLUSH_MS: int(16, 1, 1000),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});
export type WorkerConfig = z.output<typeof workerConfigSchema>;

/** Parses an env-like record; throws an Error listing every bad variable. */
export function parseConfig<S extends z.ZodType>(schema: S, env: Record<string, string | undefined>): z.output<S> {
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const result = schema.safeParse(cleaned);
  if (!result.success) {
    const lines = result.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new Error(`invalid configuration:\n${lines.join('\n')}`);
  }
  return Object.freeze(result.data) as z.output<S>;
}
