import { createHash, randomBytes } from 'node:crypto';
import { AppError, ErrorCode, type Role } from '@handoff/shared';
import { ApiTokenSchema, UserSchema, WorkerSchema, type User, type Worker } from '../db/entities.js';
import { em, type Orm } from '../db/orm.js';
import { appendAudit, SYSTEM } from './audit.js';
import { uuidv7 } from './ids.js';

/** Who is calling: a user (dashboard/REST) or a worker (worker socket). */
export type Principal =
  | { kind: 'user'; id: string; name: string; role: Role }
  | { kind: 'worker'; id: string; name: string };

const TOKEN_PREFIX = 'hnd_';

/** Tokens are 256 random bits, so a plain sha-256 is a safe at-rest form; only the hash is stored. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

function newToken(): string {
  return TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

export class AuthService {
  constructor(private readonly orm: Orm) {}

  /**
   * Resolves a bearer token to its principal, or null. Lookup is by hash (an indexed
   * equality on a digest), so timing reveals nothing about the secret itself.
   */
  async authenticate(token: string | undefined): Promise<Principal | null> {
    if (!token || !token.startsWith(TOKEN_PREFIX) || token.length > 200) return null;
    const tx = em(this.orm);
    const row = await tx.findOne(ApiTokenSchema, { tokenHash: hashToken(token), revokedAt: null });
    if (!row) return null;
    if (row.kind === 'user' && row.userId) {
      const user = await tx.findOne(UserSchema, { id: row.userId, disabledAt: null });
      return user ? { kind: 'user', id: user.id, name: user.name, role: user.role as Role } : null;
    }
    if (row.kind === 'worker' && row.workerId) {
      const worker = await tx.findOne(WorkerSchema, { id: row.workerId });
      return worker ? { kind: 'worker', id: worker.id, name: worker.name } : null;
    }
    return null;
  }

  /** Creates a user and its first API token; the token is returned once and never stored. */
  async addUser(name: string, role: Role): Promise<{ user: User; token: string }> {
    return em(this.orm).transactional(async (tx) => {
      if (await tx.findOne(UserSchema, { name })) {
        throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `user "${name}" already exists` });
      }
      const now = new Date();
      const user = tx.create(UserSchema, { id: uuidv7(), name, role, createdAt: now, disabledAt: null });
      // Entities carry plain id columns, so parents are flushed before their children.
      await tx.flush();
      const token = newToken();
      tx.create(ApiTokenSchema, {
        id: uuidv7(), kind: 'user', userId: user.id, workerId: null, tokenHash: hashToken(token),
        label: `${name} (initial)`, createdAt: now, lastUsedAt: null, revokedAt: null,
      });
      await tx.flush();
      await appendAudit(tx, { runId: null, actor: SYSTEM, action: 'user.create', metadata: { userId: user.id, name, role } });
      return { user, token };
    });
  }

  /** Creates another token for an existing user. */
  async addUserToken(name: string, label: string): Promise<string> {
    return em(this.orm).transactional(async (tx) => {
      const user = await tx.findOne(UserSchema, { name });
      if (!user) throw new AppError({ code: ErrorCode.NOT_FOUND, message: `no user "${name}"` });
      const token = newToken();
      tx.create(ApiTokenSchema, {
        id: uuidv7(), kind: 'user', userId: user.id, workerId: null, tokenHash: hashToken(token),
        label, createdAt: new Date(), lastUsedAt: null, revokedAt: null,
      });
      await tx.flush();
      await appendAudit(tx, { runId: null, actor: SYSTEM, action: 'token.create', metadata: { userId: user.id, label } });
      return token;
    });
  }

  /**
   * Issues a token for worker `name` (registering the worker if new). With `rotate`,
   * the worker's earlier tokens are revoked first.
   */
  async issueWorkerToken(name: string, opts: { rotate?: boolean } = {}): Promise<{ worker: Worker; token: string }> {
    return em(this.orm).transactional(async (tx) => {
      const now = new Date();
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
        label: `worker ${name}`, createdAt: now, lastUsedAt: null, revokedAt: null,
      });
      await tx.flush();
      await appendAudit(tx, { runId: null, actor: SYSTEM, action: 'worker.token', metadata: { workerId: worker.id, name, rotated: !!opts.rotate } });
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
