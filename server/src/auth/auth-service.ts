import { createHash, randomBytes } from 'node:crypto';
import { AppError, ErrorCode, type ApiTokenView, type Clock, type Role } from '@handoff/shared';
import { ApiTokenSchema, UserSchema, WorkerSchema, type ApiToken, type User, type Worker } from '../infra/db/entities.js';
import { em, type Orm } from '../infra/db/orm.js';
import { appendAudit, SYSTEM, type Actor } from '../audit/audit-append.js';
import { uuidv7 } from '../infra/ids.js';
import { recentlyInvalidatedTokenIds } from './auth-queries.js';

/** Who is calling: a user (dashboard/REST) or a worker (worker socket), through which token. */
export type Principal =
  | { kind: 'user'; id: string; name: string; role: Role; tokenId: string }
  | { kind: 'worker'; id: string; name: string; tokenId: string };

/** How long a token lookup is reused: a revoked or expired token is refused within this, ms. */
const LOOKUP_CACHE_MS = 500;
/** `last_used_at` is written at most this often per token, ms. */
const LAST_USED_EVERY_MS = 60_000;

export function tokenView(t: ApiToken): ApiTokenView {
  const iso = (d: Date | null | undefined) => (d ? d.toISOString() : null);
  return {
    id: t.id, kind: t.kind as 'user' | 'worker', userId: t.userId ?? null, workerId: t.workerId ?? null, label: t.label,
    createdAt: t.createdAt.toISOString(), lastUsedAt: iso(t.lastUsedAt), expiresAt: iso(t.expiresAt), revokedAt: iso(t.revokedAt),
  };
}

const TOKEN_PREFIX = 'hnd_';

/** Tokens are 256 random bits, so a plain sha-256 is a safe at-rest form; only the hash is stored. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

function expiry(now: Date, ttlMs: number | undefined): Date | null {
  return ttlMs === undefined ? null : new Date(now.getTime() + ttlMs);
}

function newToken(): string {
  return TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

export class AuthService {
  /** Recent lookups by token hash (bounded): a burst of requests costs one query. */
  private readonly cache = new Map<string, { principal: Principal | null; until: number }>();

  constructor(
    private readonly orm: Orm,
    private readonly clock: Clock,
  ) {}

  /** How many token lookups are held for reuse (for tests and diagnostics). */
  get cachedLookups(): number {
    return this.cache.size;
  }

  /**
   * Resolves a bearer token to its principal, or null (unknown, revoked, expired, or its
   * user disabled). Lookup is by hash (an indexed equality on a digest), so timing reveals
   * nothing about the secret itself; answers are reused for LOOKUP_CACHE_MS.
   */
  async authenticate(token: string | undefined): Promise<Principal | null> {
    if (!token || !token.startsWith(TOKEN_PREFIX) || token.length > 200) return null;
    const hash = hashToken(token);
    const now = this.clock.now();
    const hit = this.cache.get(hash);
    if (hit && hit.until > now) return hit.principal;
    const { principal, expiresAt } = await this.lookup(hash, now);
    // Every entry lives LOOKUP_CACHE_MS and goes in at the end, so the expired ones are at the
    // front: dropped here, a few at a time. A node holding 5,000 workers does not keep 5,000
    // lookups it will never reuse (they only come back at a reconnect).
    for (const [key, entry] of this.cache) {
      if (entry.until > now) break;
      this.cache.delete(key);
    }
    if (this.cache.size >= 10_000) this.cache.clear();
    this.cache.delete(hash);
    // Never past the token's own expiry.
    this.cache.set(hash, { principal, until: Math.min(now + LOOKUP_CACHE_MS, expiresAt ?? Infinity) });
    return principal;
  }

  /** The token's principal (null: refused) and when the token expires (epoch ms; null: never). */
  private async lookup(hash: string, now: number): Promise<{ principal: Principal | null; expiresAt: number | null }> {
    const tx = em(this.orm);
    const row = await tx.findOne(ApiTokenSchema, { tokenHash: hash, revokedAt: null });
    const expiresAt = row?.expiresAt ? row.expiresAt.getTime() : null;
    if (!row || (expiresAt !== null && expiresAt <= now)) return { principal: null, expiresAt: null };
    if (!row.lastUsedAt || now - row.lastUsedAt.getTime() > LAST_USED_EVERY_MS) {
      // Throttled and off the request's path: a lost write only makes the value older.
      void em(this.orm).nativeUpdate(ApiTokenSchema, { id: row.id }, { lastUsedAt: new Date(now) }).catch(() => undefined);
    }
    let principal: Principal | null = null;
    if (row.kind === 'user' && row.userId) {
      const user = await tx.findOne(UserSchema, { id: row.userId, disabledAt: null });
      principal = user ? { kind: 'user', id: user.id, name: user.name, role: user.role as Role, tokenId: row.id } : null;
    } else if (row.kind === 'worker' && row.workerId) {
      const worker = await tx.findOne(WorkerSchema, { id: row.workerId });
      principal = worker ? { kind: 'worker', id: worker.id, name: worker.name, tokenId: row.id } : null;
    }
    return { principal, expiresAt };
  }

  /** A user's tokens (newest first), for admins: never the secret. */
  async listTokens(userId: string): Promise<ApiTokenView[]> {
    const tx = em(this.orm);
    if (!(await tx.findOne(UserSchema, { id: userId }))) throw new AppError({ code: ErrorCode.NOT_FOUND, message: `user ${userId} not found` });
    return (await tx.find(ApiTokenSchema, { userId }, { orderBy: { createdAt: 'desc' } })).map(tokenView);
  }

  /** A user's tokens by user name (the CLI). */
  async listTokensOf(name: string): Promise<ApiTokenView[]> {
    const user = await em(this.orm).findOne(UserSchema, { name });
    if (!user) throw new AppError({ code: ErrorCode.NOT_FOUND, message: `no user "${name}"` });
    return this.listTokens(user.id);
  }

  /**
   * Revokes a token (audited). Requests with it are refused within LOOKUP_CACHE_MS on every
   * node; the caller disconnects its sockets. Revoking a revoked token is STATE_CONFLICT.
   */
  async revokeToken(actor: Actor, tokenId: string): Promise<ApiTokenView> {
    const revoked = await em(this.orm).transactional(async (tx) => {
      const row = await tx.findOne(ApiTokenSchema, { id: tokenId });
      if (!row) throw new AppError({ code: ErrorCode.NOT_FOUND, message: `token ${tokenId} not found` });
      const n = await tx.nativeUpdate(ApiTokenSchema, { id: tokenId, revokedAt: null }, { revokedAt: new Date(this.clock.now()) });
      if (n !== 1) throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `token ${tokenId} is already revoked` });
      await appendAudit(tx, { runId: null, actor, action: 'token.revoke', metadata: { id: tokenId, kind: row.kind, userId: row.userId ?? null, workerId: row.workerId ?? null, label: row.label } }, this.clock.date());
      return tokenView((await tx.findOneOrFail(ApiTokenSchema, { id: tokenId }, { refresh: true })));
    });
    // After the commit, so a lookup that read the token before it is not kept: this node
    // refuses the token from its next lookup on (one already under way may still answer with
    // the old row), every node within LOOKUP_CACHE_MS.
    this.cache.clear();
    return revoked;
  }

  /**
   * Tokens that expired or were revoked within the last `windowMs` — also by the CLI, in
   * another process: the sweeper disconnects their sockets.
   */
  async recentlyInvalidated(windowMs: number): Promise<string[]> {
    return recentlyInvalidatedTokenIds(em(this.orm), windowMs);
  }

  /** Creates a user and its first API token (expiring after `ttlMs` if given); the token is returned once and never stored. */
  async addUser(name: string, role: Role, opts: { ttlMs?: number } = {}): Promise<{ user: User; token: string }> {
    return em(this.orm).transactional(async (tx) => {
      if (await tx.findOne(UserSchema, { name })) {
        throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `user "${name}" already exists` });
      }
      const now = this.clock.date();
      const user = tx.create(UserSchema, { id: uuidv7(), name, role, createdAt: now, disabledAt: null });
      // Entities carry plain id columns, so parents are flushed before their children.
      await tx.flush();
      const token = newToken();
      tx.create(ApiTokenSchema, {
        id: uuidv7(), kind: 'user', userId: user.id, workerId: null, tokenHash: hashToken(token),
        label: `${name} (initial)`, createdAt: now, lastUsedAt: null, revokedAt: null, expiresAt: expiry(now, opts.ttlMs),
      });
      await tx.flush();
      await appendAudit(tx, { runId: null, actor: SYSTEM, action: 'user.create', metadata: { userId: user.id, name, role } }, this.clock.date());
      return { user, token };
    });
  }

  /** Creates another token for an existing user (expiring after `ttlMs` if given). */
  async addUserToken(name: string, label: string, opts: { ttlMs?: number } = {}): Promise<string> {
    return em(this.orm).transactional(async (tx) => {
      const user = await tx.findOne(UserSchema, { name });
      if (!user) throw new AppError({ code: ErrorCode.NOT_FOUND, message: `no user "${name}"` });
      const token = newToken();
      tx.create(ApiTokenSchema, {
        id: uuidv7(), kind: 'user', userId: user.id, workerId: null, tokenHash: hashToken(token),
        label, createdAt: this.clock.date(), lastUsedAt: null, revokedAt: null, expiresAt: expiry(this.clock.date(), opts.ttlMs),
      });
      await tx.flush();
      await appendAudit(tx, { runId: null, actor: SYSTEM, action: 'token.create', metadata: { userId: user.id, label, ttlMs: opts.ttlMs ?? null } }, this.clock.date());
      return token;
    });
  }

  /**
   * Issues a token for worker `name` (registering the worker if new). With `rotate`,
   * the worker's earlier tokens are revoked first.
   */
  async issueWorkerToken(name: string, opts: { rotate?: boolean } = {}): Promise<{ worker: Worker; token: string }> {
    return em(this.orm).transactional(async (tx) => {
      const now = this.clock.date();
      let worker = await tx.findOne(WorkerSchema, { name });
      if (!worker) {
        worker = tx.create(WorkerSchema, {
          id: uuidv7(), name, capacity: 1, status: 'offline', version: null, connectedAt: null, lastHeartbeatAt: null, createdAt: now,
        });
        await tx.flush();
      } else if (opts.rotate) {
        await tx.nativeUpdate(ApiTokenSchema, { workerId: worker.id, revokedAt: null }, { revokedAt: now });
      }
      const token = newToken();
      tx.create(ApiTokenSchema, {
        id: uuidv7(), kind: 'worker', userId: null, workerId: worker.id, tokenHash: hashToken(token),
        label: `worker ${name}`, createdAt: now, lastUsedAt: null, revokedAt: null, expiresAt: null,
      });
      await tx.flush();
      await appendAudit(tx, { runId: null, actor: SYSTEM, action: 'worker.token', metadata: { workerId: worker.id, name, rotated: !!opts.rotate } }, this.clock.date());
      return { worker, token };
    });
  }

  async userCount(): Promise<number> {
    return em(this.orm).count(UserSchema, {});
  }

  /** On an empty database: creates the first admin and returns its one-time token. */
  async bootstrapAdmin(): Promise<string | null> {
    if ((await this.userCount()) > 0) return null;
    try {
      return (await this.addUser('admin', 'admin')).token;
    } catch (err) {
      // Another hub node bootstrapped at the same moment; it printed the token.
      if (err instanceof AppError && err.code === ErrorCode.STATE_CONFLICT) return null;
      throw err;
    }
  }
}
