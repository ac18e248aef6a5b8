import { AppError, ErrorCode, type Clock, type KickViewerBody, type KickViewerResponse, type PresenceKicked, type PresenceViewer, type Role, type TimerHandle } from '@handoff/shared';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { UserSchema, WriteGrantSchema } from '../infra/db/entities.js';
import { em, type Orm } from '../infra/db/orm.js';
import { GrantEvent } from '../domain/write-grant-machine.js';
import { appendAudit } from '../audit/audit-append.js';
import { uuidv7 } from '../infra/ids.js';
import { CoalescedReads } from '../infra/coalesced-reads.js';
import type { PolicyGate, UserActor } from '../policy/policy-gate.js';
import { requireRun } from '../runs/run-queries.js';
import type { WriteGrantService } from '../grants/write-grant-service.js';

// Who is watching each run right now (issue 13). One entry per dashboard connection that has
// a run open (`run:subscribe`), kept by the node that holds the socket. With Redis the entries
// of every node sit in one hash per run, each with its own expiry that its node pushes forward
// every `refreshMs`: a node that dies stops refreshing, and its viewers vanish within `ttlMs`.
// Without Redis the same store lives in memory. Either way it is a cache of the sockets, never
// a source of truth for anything but this list.

/** One open run page: a socket watching a run. */
export interface PresenceEntry {
  /** The socket id (unique across nodes). */
  connId: string;
  userId: string;
  name: string;
  role: Role;
  /** ms since the epoch: when this connection began watching. */
  since: number;
  /** ms since the epoch: past this the entry is stale (its node stopped refreshing it). */
  expiresAt: number;
}

/** Where presence entries and kick bans live: Redis across nodes, or this process. */
export interface PresenceStore {
  put(runId: string, entries: PresenceEntry[], ttlMs: number): Promise<void>;
  remove(runId: string, connIds: string[]): Promise<void>;
  /** The entries not yet expired at `now` (stale ones are dropped on the way). */
  list(runId: string, now: number): Promise<PresenceEntry[]>;
  ban(runId: string, userId: string, notice: PresenceKicked, ms: number): Promise<void>;
  banned(runId: string, userId: string, now: number): Promise<PresenceKicked | null>;
}

/** What presence does to sockets; implemented over the dashboard namespace (through the adapter). */
export interface PresenceFanout {
  /** Pushes the run's viewers to its room on every node. */
  updated(runId: string, viewers: PresenceViewer[]): void;
  /** Tells these sockets why, and takes them out of the run's rooms on every node. */
  kick(connIds: string[], notice: PresenceKicked): void;
}

export interface PresenceOptions {
  /** How long an entry lives without its node refreshing it, ms (default 15 s). */
  ttlMs?: number;
  /** How often a node refreshes its own entries and re-publishes lists that expired entries left, ms (default 5 s). */
  refreshMs?: number;
  /** How long a kicked user stays out of the run, ms (default 10 min). */
  kickBanMs?: number;
}

interface Watcher {
  userId: string;
  name: string;
  role: Role;
  since: number;
}

export class PresenceService {
  private readonly ttlMs: number;
  private readonly refreshMs: number;
  private readonly kickBanMs: number;
  /** This node's connections: runId → connId → who. */
  private readonly local = new Map<string, Map<string, Watcher>>();
  /** connId → the runs it watches: a disconnect touches only those. */
  private readonly runsOf = new Map<string, Set<string>>();
  /** The connection ids last published per run, to publish again only when expiry changed the list. */
  private readonly published = new Map<string, string>();
  private readonly publishes = new CoalescedReads<PresenceEntry[] | null>();
  private timer: TimerHandle | null = null;

  constructor(
    private readonly orm: Orm,
    private readonly store: PresenceStore,
    private readonly fanout: PresenceFanout,
    private readonly gate: PolicyGate,
    private readonly grants: WriteGrantService,
    private readonly clock: Clock,
    private readonly log: Logger,
    options: PresenceOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? 15_000;
    this.refreshMs = options.refreshMs ?? 5_000;
    this.kickBanMs = options.kickBanMs ?? 10 * 60_000;
  }

  start(): void {
    this.timer ??= this.clock.setInterval(() => void this.refresh(), this.refreshMs).unref();
  }

  /** Stops refreshing and removes this node's entries (a draining node's viewers reconnect elsewhere). */
  async stop(): Promise<void> {
    this.timer?.cancel();
    this.timer = null;
    const runs = [...this.local.entries()];
    this.local.clear();
    this.runsOf.clear();
    for (const [runId, conns] of runs) await this.quietly(this.store.remove(runId, [...conns.keys()]));
  }

  /** FORBIDDEN while the user is kicked from the run; the message says who and why. */
  async assertMayWatch(runId: string, userId: string): Promise<void> {
    const notice = await this.store.banned(runId, userId, this.clock.now()).catch((err: Error) => {
      // A Redis outage must not stop everyone from watching: a kick's cut-off already happened.
      this.log.warn({ err: err.message, runId }, 'could not read kick bans');
      return null;
    });
    if (notice) throw new AppError({ code: ErrorCode.FORBIDDEN, message: kickedMessage(notice) });
  }

  /** A connection opened the run. Idempotent per connection. */
  async join(runId: string, connId: string, user: { id: string; name: string; role: Role }): Promise<void> {
    let conns = this.local.get(runId);
    if (!conns) this.local.set(runId, (conns = new Map()));
    const known = conns.get(connId);
    const watcher = known ?? { userId: user.id, name: user.name, role: user.role, since: this.clock.now() };
    conns.set(connId, watcher);
    let runs = this.runsOf.get(connId);
    if (!runs) this.runsOf.set(connId, (runs = new Set()));
    runs.add(runId);
    await this.quietly(this.store.put(runId, [this.entry(connId, watcher)], this.ttlMs));
    await this.publish(runId);
  }

  /** A connection closed the run. */
  async leave(runId: string, connId: string): Promise<void> {
    const conns = this.local.get(runId);
    if (!conns?.delete(connId)) return;
    if (conns.size === 0) this.local.delete(runId);
    this.forget(connId, runId);
    await this.quietly(this.store.remove(runId, [connId]));
    await this.publish(runId);
  }

  /** Kicked connections (the socket layer took them out of the run's rooms): this node stops refreshing them. */
  dropLocal(runId: string, connIds: string[]): void {
    const conns = this.local.get(runId);
    if (!conns) return;
    for (const id of connIds) if (conns.delete(id)) this.forget(id, runId);
    if (conns.size === 0) this.local.delete(runId);
  }

  /** A socket disconnected: it leaves every run it watched. */
  async disconnected(connId: string): Promise<void> {
    const runs = [...(this.runsOf.get(connId) ?? [])];
    await Promise.all(runs.map((runId) => this.leave(runId, connId)));
  }

  async viewers(runId: string): Promise<PresenceViewer[]> {
    return toViewers(await this.store.list(runId, this.clock.now()));
  }

  /**
   * Removes one user from the run's live view: every connection of theirs on every node is
   * told why and leaves the run's rooms, they stay out for `kickBanMs`, and their write grant
   * ends. Audited (`presence.kick`) before anything is cut: a kick that was not recorded did
   * not happen.
   */
  async kick(actor: UserActor, runId: string, body: KickViewerBody): Promise<KickViewerResponse> {
    if (body.userId === actor.id) throw new AppError({ code: ErrorCode.VALIDATION, message: 'you cannot kick yourself: close the run page instead' });
    const tx = em(this.orm);
    const run = await requireRun(tx, runId);
    const target = await tx.findOne(UserSchema, { id: body.userId });
    if (!target) throw new AppError({ code: ErrorCode.NOT_FOUND, message: `no user ${body.userId}` });
    await this.gate.check('presence.kick', actor, { runId, runLabels: run.labels, targetRoles: [target.role as Role] }, { ...body });
    // Kicking the controller would leave the run taken over with nobody able to type or hand back.
    if (run.controlState === 'operator' && run.controllerId === target.id) {
      throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `${target.name} controls the run: their takeover must be handed back first (an admin can force it)` });
    }
    const entries = (
      await this.store.list(runId, this.clock.now()).catch((err: Error) => {
        throw new AppError({ code: ErrorCode.UNAVAILABLE, message: 'presence is unavailable (Redis): try the kick again in a moment', cause: err });
      })
    ).filter((e) => e.userId === target.id);
    const grants = await tx.find(WriteGrantSchema, { runId, granteeId: target.id, status: 'active' });
    if (entries.length === 0 && grants.length === 0) {
      throw new AppError({ code: ErrorCode.NOT_FOUND, message: `${target.name} is not watching run ${runId} and holds no write grant on it` });
    }
    const until = new Date(this.clock.now() + this.kickBanMs).toISOString();
    const notice: PresenceKicked = { runId, by: { id: actor.id, name: actor.name }, reason: body.reason ?? null, until };
    const correlationId = uuidv7();
    await appendAudit(em(this.orm), {
      runId, correlationId, actor, action: 'presence.kick',
      metadata: { userId: target.id, user: target.name, role: target.role, reason: body.reason ?? null, connections: entries.length, grants: grants.map((g) => g.id), until },
    }, this.clock.date());
    // The ban first: a reload racing the cut-off is refused rather than let back in.
    await this.quietly(this.store.ban(runId, target.id, notice, this.kickBanMs));
    const connIds = entries.map((e) => e.connId);
    this.fanout.kick(connIds, notice);
    await this.quietly(this.store.remove(runId, connIds));
    const ended = grants.length ? await this.grants.end(grants, GrantEvent.revoke, `kicked by ${actor.name}`, actor) : [];
    await this.publish(runId);
    return { kicked: { userId: target.id, name: target.name }, connectionsCut: connIds.length, grantRevoked: ended.length > 0, until };
  }

  /** Pushes the node's own entries forward and re-publishes lists that expiry changed (every `refreshMs`). */
  async refresh(): Promise<void> {
    for (const [runId, conns] of this.local) {
      await this.quietly(this.store.put(runId, [...conns].map(([connId, w]) => this.entry(connId, w)), this.ttlMs));
      const current = await this.store.list(runId, this.clock.now()).catch(() => null);
      if (current && key(current) !== this.published.get(runId)) await this.publish(runId, current);
    }
    // Lists of runs nobody here watches any more are another node's to publish.
    for (const runId of this.published.keys()) if (!this.local.has(runId)) this.published.delete(runId);
  }

  /**
   * Pushes the run's list to its room. Without `known`, publishes of one run coalesce: one
   * asked for while another runs waits for the next, which reads the store once for every
   * change made before it started — a burst of N joins costs a few reads and pushes, not N
   * (N pushes of N viewers each to N sockets would make a crowd quadratic).
   */
  private async publish(runId: string, known?: PresenceEntry[]): Promise<void> {
    if (known) return this.push(runId, known);
    await this.publishes.read(runId, async () => {
      const read = await this.store.list(runId, this.clock.now()).catch((err: Error) => {
        this.log.warn({ err: err.message, runId }, 'could not read presence');
        return null;
      });
      if (read) this.push(runId, read);
      return read;
    });
  }

  private push(runId: string, entries: PresenceEntry[]): void {
    this.published.set(runId, key(entries));
    this.fanout.updated(runId, toViewers(entries));
  }

  private forget(connId: string, runId: string): void {
    const runs = this.runsOf.get(connId);
    runs?.delete(runId);
    if (runs?.size === 0) this.runsOf.delete(connId);
  }

  private entry(connId: string, w: Watcher): PresenceEntry {
    return { connId, userId: w.userId, name: w.name, role: w.role, since: w.since, expiresAt: this.clock.now() + this.ttlMs };
  }

  /** Presence is best effort: a store outage is logged, never fails watching. */
  private async quietly(op: Promise<unknown>): Promise<void> {
    await op.catch((err: Error) => this.log.warn({ err: err.message }, 'presence store unavailable'));
  }
}

/** The FORBIDDEN text a kicked user gets on the run. */
export function kickedMessage(n: PresenceKicked): string {
  return `${n.by.name} removed you from this run${n.reason ? `: ${n.reason}` : ''} (until ${n.until})`;
}

const key = (entries: PresenceEntry[]) => entries.map((e) => e.connId).sort().join(',');

/** One row per user, earliest first: all their connections count as one viewer. */
function toViewers(entries: PresenceEntry[]): PresenceViewer[] {
  const byUser = new Map<string, PresenceViewer & { sinceMs: number }>();
  for (const e of entries) {
    const v = byUser.get(e.userId);
    if (!v) byUser.set(e.userId, { userId: e.userId, name: e.name, role: e.role, since: new Date(e.since).toISOString(), sinceMs: e.since, connections: 1 });
    else {
      v.connections += 1;
      if (e.since < v.sinceMs) Object.assign(v, { since: new Date(e.since).toISOString(), sinceMs: e.since });
    }
  }
  return [...byUser.values()].sort((a, b) => a.sinceMs - b.sinceMs || a.name.localeCompare(b.name)).map(({ sinceMs: _, ...v }) => v);
}

/** A single node's store. */
export class MemoryPresenceStore implements PresenceStore {
  private readonly entries = new Map<string, Map<string, PresenceEntry>>();
  private readonly bans = new Map<string, { notice: PresenceKicked; until: number }>();

  constructor(private readonly clock: Clock) {}

  async put(runId: string, entries: PresenceEntry[]): Promise<void> {
    let run = this.entries.get(runId);
    if (!run) this.entries.set(runId, (run = new Map()));
    for (const e of entries) run.set(e.connId, e);
  }

  async remove(runId: string, connIds: string[]): Promise<void> {
    const run = this.entries.get(runId);
    for (const id of connIds) run?.delete(id);
    if (run?.size === 0) this.entries.delete(runId);
  }

  async list(runId: string, now: number): Promise<PresenceEntry[]> {
    const run = this.entries.get(runId);
    if (!run) return [];
    for (const [id, e] of run) if (e.expiresAt <= now) run.delete(id);
    return [...run.values()];
  }

  async ban(runId: string, userId: string, notice: PresenceKicked, ms: number): Promise<void> {
    const now = this.clock.now();
    for (const [k, b] of this.bans) if (b.until <= now) this.bans.delete(k);
    this.bans.set(`${runId}:${userId}`, { notice, until: now + ms });
  }

  async banned(runId: string, userId: string, now: number): Promise<PresenceKicked | null> {
    const b = this.bans.get(`${runId}:${userId}`);
    return b && b.until > now ? b.notice : null;
  }
}

/**
 * Every node's entries in Redis: one hash per run (`<prefix>:presence:<runId>`, field = socket
 * id, value = the entry with its own expiry), the key itself expiring `ttlMs` after its last
 * write; bans are plain keys with a TTL.
 */
export class RedisPresenceStore implements PresenceStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private runKey = (runId: string) => `${this.prefix}:presence:${runId}`;
  private banKey = (runId: string, userId: string) => `${this.prefix}:presence-kick:${runId}:${userId}`;

  async put(runId: string, entries: PresenceEntry[], ttlMs: number): Promise<void> {
    if (!entries.length) return;
    const k = this.runKey(runId);
    await this.redis
      .multi()
      .hset(k, Object.fromEntries(entries.map((e) => [e.connId, JSON.stringify(e)])))
      .pexpire(k, ttlMs)
      .exec();
  }

  async remove(runId: string, connIds: string[]): Promise<void> {
    if (connIds.length) await this.redis.hdel(this.runKey(runId), ...connIds);
  }

  async list(runId: string, now: number): Promise<PresenceEntry[]> {
    const raw = await this.redis.hgetall(this.runKey(runId));
    const live: PresenceEntry[] = [];
    const stale: string[] = [];
    for (const [connId, json] of Object.entries(raw)) {
      const e = JSON.parse(json) as PresenceEntry;
      if (e.expiresAt > now) live.push(e);
      else stale.push(connId);
    }
    if (stale.length) await this.redis.hdel(this.runKey(runId), ...stale);
    return live;
  }

  async ban(runId: string, userId: string, notice: PresenceKicked, ms: number): Promise<void> {
    await this.redis.set(this.banKey(runId, userId), JSON.stringify(notice), 'PX', ms);
  }

  async banned(runId: string, userId: string): Promise<PresenceKicked | null> {
    const raw = await this.redis.get(this.banKey(runId, userId));
    return raw ? (JSON.parse(raw) as PresenceKicked) : null;
  }
}
