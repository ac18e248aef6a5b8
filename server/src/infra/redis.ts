import { Redis } from 'ioredis';
import { RedisAdapter, type RedisAdapterOptions } from '@socket.io/redis-adapter';
import type { Namespace } from 'socket.io';
import type { Logger } from '../logger.js';

/** How long a Redis round trip may take before a probe (readiness) counts Redis as down, ms. */
const PROBE_TIMEOUT_MS = 1000;
/** How long a starting node waits for Redis before it serves without it (it connects later by itself), ms. */
const STARTUP_WAIT_MS = 5000;

/**
 * The hub's Redis connections: `pub` carries the socket.io adapter's publishes and the
 * sweeper lease, `sub` the adapter's subscriptions. Redis only carries fan-out and the
 * lease, so an outage must never stop the process: every client has an error listener,
 * every command's failure is handled, and the outage is logged once when it starts and
 * once when it ends — not per command.
 */
export class RedisLink {
  /** For the adapter: views of `pub` and `sub` whose fire-and-forget commands can never reject unhandled. */
  private readonly adapterPub: Redis;
  private readonly adapterSub: Redis;
  readonly pub: Redis;
  readonly sub: Redis;
  private downSince: number | null = null;
  private closing = false;

  constructor(url: string, private readonly log: Logger) {
    // pub fails fast while disconnected (no offline queue): a publish during an outage is
    // dropped — fan-out is best effort and clients resync on their next subscribe — rather
    // than queued without bound and replayed stale when Redis returns.
    this.pub = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, connectionName: 'handoff-hub-pub' });
    // sub only (re)subscribes: those few commands wait for the connection (no retry limit),
    // and ioredis re-subscribes by itself after a reconnect.
    this.sub = new Redis(url, { maxRetriesPerRequest: null, connectionName: 'handoff-hub-sub' });
    for (const [name, client] of [['pub', this.pub], ['sub', this.sub]] as const) {
      client.on('error', (err: Error) => this.failed(err, name));
      client.on('close', () => this.failed(new Error('connection closed'), name));
      client.on('ready', () => this.recovered());
    }
    this.adapterPub = guarded(this.pub, ['publish'], (err) => this.failed(err, 'publish'));
    this.adapterSub = guarded(this.sub, ['subscribe', 'psubscribe', 'unsubscribe', 'punsubscribe'], (err) => this.failed(err, 'subscribe'));
  }

  /**
   * The socket.io adapter over these connections, for `io.adapter(...)`. Besides the guarded
   * clients, its node count never rejects: socket.io calls `serverCount()` for every
   * broadcast with an ack (e.g. a push to a worker) without handling a failure. While
   * Redis is down, this node is the only one it can reach, so the count is 1 — acks from
   * local clients complete the broadcast instead of it waiting for nodes it cannot reach.
   */
  adapter(opts: Partial<RedisAdapterOptions>): (nsp: Namespace) => RedisAdapter {
    const failed = (err: Error) => this.failed(err, 'server count');
    class OutageTolerantAdapter extends RedisAdapter {
      override async serverCount(): Promise<number> {
        try {
          return await super.serverCount();
        } catch (err) {
          failed(err as Error);
          return 1;
        }
      }
    }
    const { adapterPub, adapterSub } = this;
    // socket.io calls this with `new`: a function, not an arrow.
    return function outageTolerantAdapter(nsp: Namespace) {
      return new OutageTolerantAdapter(nsp, adapterPub, adapterSub, opts);
    };
  }

  /** True while both connections are up. */
  get up(): boolean {
    return this.pub.status === 'ready' && this.sub.status === 'ready';
  }

  /** Waits (bounded) for the first connection, so a node normally starts with fan-out working. */
  async ready(): Promise<void> {
    const connected = (c: Redis) => (c.status === 'ready' ? Promise.resolve() : new Promise<void>((resolve) => c.once('ready', () => resolve())));
    let timer: NodeJS.Timeout | undefined;
    const waited = await Promise.race([
      Promise.all([connected(this.pub), connected(this.sub)]).then(() => true),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), STARTUP_WAIT_MS))),
    ]);
    clearTimeout(timer);
    if (!waited) this.log.warn({ waitedMs: STARTUP_WAIT_MS }, 'redis not reachable at start: serving this node alone until it is');
  }

  /** Readiness probe: a PING answered within PROBE_TIMEOUT_MS. Never rejects. */
  async ping(): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const answered = await Promise.race([
      this.pub.ping().then((r) => r === 'PONG', () => false),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), PROBE_TIMEOUT_MS))),
    ]);
    clearTimeout(timer);
    return answered;
  }

  /** Records a failed Redis call or connection; the first failure of an outage is logged. */
  failed(err: Error, where: string): void {
    // A command that fails on live connections (or late, after a reconnect) is handled by its
    // caller; only lost connections make an outage, which 'ready' ends.
    if (this.closing || this.downSince !== null || this.up) return;
    this.downSince = Date.now();
    this.log.error({ reason: err.message, where }, 'redis unavailable: cross-node fan-out and the sweeper lease are paused; this node keeps serving its own sockets');
  }

  private recovered(): void {
    if (this.downSince === null || !this.up) return;
    const outageMs = Date.now() - this.downSince;
    this.downSince = null;
    this.log.info({ outageMs }, 'redis available again: cross-node fan-out and the sweeper lease resume');
  }

  /** Closes both connections (a clean QUIT when connected, no reconnect). */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([this.pub, this.sub].map((c) => (c.status === 'ready' ? c.quit().then(() => undefined, () => c.disconnect()) : c.disconnect())));
  }
}

/**
 * The socket.io Redis adapter calls `publish` (broadcasts, room joins, inter-node requests)
 * and `(p)(un)subscribe` (at start and close) without handling the returned promise, so
 * during an outage each would be an unhandled rejection. This view of the client handles
 * those; every other property is the client's own.
 */
function guarded(client: Redis, methods: string[], onError: (err: Error) => void): Redis {
  return new Proxy(client, {
    get(target, prop) {
      if (typeof prop === 'string' && methods.includes(prop)) {
        const method = Reflect.get(target, prop, target) as (...a: unknown[]) => Promise<unknown>;
        return (...args: unknown[]) =>
          method.apply(target, args).catch((err: Error) => {
            onError(err);
            return null;
          });
      }
      const value: unknown = Reflect.get(target, prop, target);
      // Methods run on the client itself (ioredis keeps state on `this`); the adapter also
      // reads `constructor.name`, which must stay the class.
      return typeof value === 'function' && prop !== 'constructor' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}
