import {
  AppError,
  ErrorCode,
  ACTIVE_SESSION_STATUSES,
  FINISHED_RUN_STATUSES,
  type Clock,
  type LiveSession,
  type Provider,
  type RunStatus,
  type SessionStatus,
} from '@handoff/shared';
import type { Logger } from 'pino';
import { LiveSessionSchema, WriteGrantSchema, type LiveSessionRow, type RunRow } from '../infra/db/entities.js';
import { em, type Em, type Orm } from '../infra/db/orm.js';
import { syncWithDatabase } from '../infra/db/revisions.js';
import { SessionEvent, sessionStatesAllowing, sessionTransition } from '../domain/live-session-machine.js';
import { boundedTtlMs } from '../domain/ttl.js';
import { appendAudit, auditAppendCall, SYSTEM, type Actor } from '../audit/audit-append.js';
import { isUser, rolesOf, SYSTEM_GATE_ACTOR, type CommandOptions, type PolicyGate } from '../policy/policy-gate.js';
import { uuidv7 } from '../infra/ids.js';
import { isRefusal } from '../errors.js';
import type { Notifier } from '../hooks/notifier.js';
import type { HubEvents } from '../hooks/hub-events.js';
import { assertRunOwned, requireRun } from '../runs/run-queries.js';
import { sessionView } from '../views.js';
import { activeExternalSharesOf, extendIfLive, insertStartWebShare, lockRunSessions } from './session-queries.js';

/** Encrypts RW attach data at rest, bound to its session id. */
export interface Sealer {
  seal(plaintext: string, aad: string): string;
}

export interface LiveSessionOptions {
  /** LIVE_SESSION_TTL, LIVE_SESSION_MAX_TTL, LIVE_GRACE, LIVE_PROVIDER_START_TIMEOUT (ms). */
  ttlMs: number;
  maxTtlMs: number;
  graceMs: number;
  startTimeoutMs: number;
  defaultProvider: Provider;
  /** LIVE_SESSION_ENABLED_DEFAULT: with an external defaultProvider, every run starts that share too. */
  enabledByDefault: boolean;
  maxPerRun: number;
  maxPerWorker: number;
  allowWeb: boolean;
  /** A READY share missing from a worker's heartbeat is failed only once READY this long, ms (2 × HEARTBEAT_INTERVAL). */
  heartbeatGraceMs: number;
  relay: { host: string; port: number | null; fingerprints: { rsa?: string; ed25519?: string } } | null;
}

const ACTIVE = ACTIVE_SESSION_STATUSES as SessionStatus[];
const EXTERNAL: Provider[] = ['tmate', 'upterm'];
const isExternal = (p: string) => EXTERNAL.includes(p as Provider);

/**
 * Live sessions (terminal shares), DESIGN.md §2. Every transition is a conditional
 * update on the expected status, written with its audit row in one transaction; pushes
 * (dashboards, worker) happen after the commit.
 */
export class LiveSessionService {
  constructor(
    private readonly orm: Orm,
    private readonly notifier: Notifier,
    private readonly gate: PolicyGate,
    /** Announces session.created (grace warnings) and session.ended (its write grants end). */
    private readonly events: HubEvents,
    private readonly clock: Clock,
    private readonly sealer: Sealer,
    private readonly log: Logger,
    private readonly options: LiveSessionOptions,
  ) {}

  // ── queries ────────────────────────────────────────────────────────────────

  async list(runId: string): Promise<LiveSession[]> {
    await requireRun(em(this.orm), runId);
    const rows = await em(this.orm).find(LiveSessionSchema, { runId }, { orderBy: { createdAt: 'asc' } });
    return rows.map(sessionView);
  }

  /** The primary session: the newest active one, else the newest. */
  async primary(runId: string): Promise<LiveSession> {
    const sessions = await this.list(runId);
    const pick = [...sessions].reverse().find((s) => ACTIVE.includes(s.status)) ?? sessions[sessions.length - 1];
    if (!pick) throw new AppError({ code: ErrorCode.NOT_FOUND, message: `run ${runId} has no live session` });
    return pick;
  }

  /**
   * Live viewing needs the run's `web` share: refused (FORBIDDEN) while the run is active
   * and its web share was revoked or expired. Finished runs can always be replayed.
   */
  async assertCanWatch(runId: string): Promise<void> {
    const tx = em(this.orm);
    const run = await requireRun(tx, runId);
    if (FINISHED_RUN_STATUSES.includes(run.status as RunStatus)) return;
    const web = await tx.find(LiveSessionSchema, { runId, provider: 'web' }, { orderBy: { createdAt: 'desc' }, limit: 1 });
    const latest = web[0];
    if (latest ? ACTIVE.includes(latest.status as SessionStatus) : run.liveSessionEnabled) return;
    throw new AppError({
      code: ErrorCode.FORBIDDEN,
      message:
        latest && latest.status !== 'DISABLED'
          ? `live view of run ${runId} is ${latest.status === 'REVOKED' ? 'revoked' : 'over'} (${latest.endReason ?? latest.status})`
          : `run ${runId} has live viewing disabled`,
    });
  }

  // ── commands ───────────────────────────────────────────────────────────────

  /**
   * Idempotent per (run, provider): an active session is returned as is (audited as
   * `session.reuse`). A run whose live session is DISABLED gets it enabled (DISABLED →
   * STARTING). tmate and upterm may run side by side; with `switch`, starting one ends an
   * active share of the other (`switched`).
   */
  async create(
    actor: Actor,
    runId: string,
    body: { provider?: Provider | undefined; ttlMinutes?: number | undefined; switch?: boolean | undefined },
    opts: CommandOptions = {},
  ): Promise<{ session: LiveSession; created: boolean }> {
    const provider = body.provider ?? this.options.defaultProvider;
    const ttlMs = body.ttlMinutes === undefined ? this.options.ttlMs : boundedTtlMs(body.ttlMinutes, this.options.maxTtlMs, 'LIVE_SESSION_MAX_TTL');
    if (isUser(actor) && !opts.approved) {
      const run = await requireRun(em(this.orm), runId);
      await this.gate.check(isExternal(provider) ? 'session.create.external' : 'session.create', actor, { runId, runLabels: run.labels, provider, ttlMinutes: Math.ceil(ttlMs / 60_000) }, { provider, ttlMinutes: body.ttlMinutes ?? null, switch: body.switch ?? false });
    }
    const switched: LiveSessionRow[] = [];
    const result = await em(this.orm).transactional(async (tx) => {
      // Serializes creates per run: idempotency and the per-run limit hold under concurrency.
      await lockRunSessions(tx, runId);
      const run = await requireRun(tx, runId);
      if (FINISHED_RUN_STATUSES.includes(run.status as RunStatus)) {
        throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `run ${runId} is ${run.status}: it cannot be shared` });
      }
      // The active shares and the DISABLED row (a run started without one) in one read.
      const current = await tx.find(LiveSessionSchema, { runId, status: { $in: [...ACTIVE, 'DISABLED'] } });
      const active = current.filter((s) => s.status !== 'DISABLED');
      const existing = active.find((s) => s.provider === provider);
      if (existing) {
        await appendAudit(tx, { runId, sessionId: existing.id, correlationId: existing.correlationId, actor, action: 'session.reuse', metadata: { provider } }, this.clock.date());
        return { row: existing, created: false };
      }
      const replaced = isExternal(provider) && body.switch ? active.filter((s) => isExternal(s.provider)) : [];
      if (active.length - replaced.length >= this.options.maxPerRun) {
        throw new AppError({ code: ErrorCode.LIMIT_REACHED, message: `run ${runId} already has ${active.length} active shares (LIVE_MAX_SHARES_PER_RUN=${this.options.maxPerRun})` });
      }
      if (run.workerId && isExternal(provider)) {
        const n = await activeExternalSharesOf(tx, run.workerId);
        if (n - replaced.length >= this.options.maxPerWorker) {
          throw new AppError({ code: ErrorCode.LIMIT_REACHED, message: `worker already serves ${n} shares (LIVE_MAX_CONCURRENT_PER_WORKER=${this.options.maxPerWorker})` });
        }
      }
      for (const old of replaced) {
        const ended = await this.transitionIn(tx, old, SessionEvent.end, { endReason: 'switched' }, actor, 'session.end');
        if (ended) switched.push(ended);
      }
      const now = this.clock.date();
      // Asked of the worker right after commit (else when the run starts): the start timeout counts from then.
      const startRequestedAt = isExternal(provider) && run.workerId && run.status === 'running' ? now : null;
      const disabled = current.find((s) => s.status === 'DISABLED');
      let row: LiveSessionRow;
      if (disabled) {
        // The run's live session was off: enabling it is this session's DISABLED → STARTING.
        const enabled = await this.transitionIn(tx, disabled, SessionEvent.start, { provider, createdBy: actor.id, workerId: run.workerId ?? null, expiresAt: new Date(now.getTime() + ttlMs), startRequestedAt }, actor, 'session.create', { ttlMs, enabled: true });
        if (!enabled) throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `the live session of run ${runId} changed state meanwhile; retry` });
        row = enabled;
      } else {
        // An approved create continues its approval's correlation (every step shares one id).
        const correlationId = opts.correlationId ?? uuidv7();
        row = tx.create(LiveSessionSchema, {
          id: uuidv7(), runId, provider, status: sessionTransition('DISABLED', SessionEvent.start), workerId: run.workerId ?? null,
          correlationId, createdBy: actor.id, createdAt: now, readyAt: null, endedAt: null, expiresAt: new Date(now.getTime() + ttlMs),
          graceWarnedAt: null, lastHeartbeatAt: null, startRequestedAt, endReason: null, errorMessage: null, attachRo: null, attachRwEnc: null,
        });
        await tx.flush();
        await appendAudit(tx, { runId, sessionId: row.id, correlationId, actor, action: 'session.create', metadata: { provider, ttlMs } }, this.clock.date());
      }
      // The session's write bumped the run's revision, so this transaction now holds the run's
      // row: an exit that committed since the check above is visible to a fresh read, and one
      // not committed yet waits for this commit (and then ends this session with the run).
      // Without this, a create racing the run's end left a share open on a finished run.
      if (FINISHED_RUN_STATUSES.includes((await requireRun(tx, runId, { refresh: true })).status as RunStatus)) {
        throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `run ${runId} ended meanwhile: it cannot be shared` });
      }
      // The web provider is the hub itself: ready as soon as the run runs.
      if (provider === 'web' && run.status === 'running') {
        await this.transitionIn(tx, row, SessionEvent.ready, { readyAt: this.clock.date(), lastHeartbeatAt: this.clock.date() }, SYSTEM, 'session.ready');
      }
      return { row, created: true, run };
    });
    for (const s of switched) this.afterEnd(s, 'switched');
    if (result.created) {
      this.notifier.sessionUpdated(sessionView(result.row));
      if (isExternal(provider) && result.run?.workerId && result.run.status === 'running') this.requestShare(result.row, result.run.workerId);
      void this.events.emit('session.created', { sessionId: result.row.id });
    }
    return { session: sessionView(result.row), created: result.created };
  }

  async extend(actor: Actor, runId: string, body: { ttlMinutes: number; provider?: Provider | undefined }, opts: CommandOptions = {}): Promise<LiveSession> {
    const ttlMs = boundedTtlMs(body.ttlMinutes, this.options.maxTtlMs, 'LIVE_SESSION_MAX_TTL');
    if (isUser(actor) && !opts.approved) {
      const run = await requireRun(em(this.orm), runId);
      await this.gate.check('session.extend', actor, { runId, runLabels: run.labels, ttlMinutes: body.ttlMinutes, ...(body.provider ? { provider: body.provider } : {}) }, { ...body });
    }
    const target = body.provider ? await this.latest(runId, body.provider) : await this.primary(runId);
    const row = await em(this.orm).transactional(async (tx) => {
      // A string now: the refresh below updates the same entity instance.
      const previousExpiresAt = (await tx.findOneOrFail(LiveSessionSchema, { id: target.id }, { refresh: true })).expiresAt.toISOString();
      // One statement decides the race with the expiry sweep (see `extendIfLive`).
      if (!(await extendIfLive(tx, target.id, ttlMs))) {
        const current = await tx.findOneOrFail(LiveSessionSchema, { id: target.id }, { refresh: true });
        const expired = current.endReason === 'ttl' || current.expiresAt.getTime() <= this.clock.now();
        throw expired
          ? new AppError({ code: ErrorCode.EXPIRED, message: `live session ${current.id} has expired; create a new one` })
          : new AppError({ code: ErrorCode.STATE_CONFLICT, message: `live session ${current.id} is ${current.status}` });
      }
      const fresh = await tx.findOneOrFail(LiveSessionSchema, { id: target.id }, { refresh: true });
      await appendAudit(tx, {
        runId, sessionId: fresh.id, correlationId: fresh.correlationId, actor, action: 'session.extend',
        metadata: { provider: fresh.provider, ttlMs, previousExpiresAt, expiresAt: fresh.expiresAt.toISOString() },
      }, this.clock.date());
      return fresh;
    });
    const view = sessionView(row);
    this.notifier.sessionUpdated(view);
    void this.events.emit('session.created', { sessionId: row.id }); // a short extension may already be inside the grace window
    return view;
  }

  /** Revokes the provider's active session, or every active session of the run. */
  async revoke(actor: Actor, runId: string, body: { reason?: string | undefined; provider?: Provider | undefined }, opts: CommandOptions = {}): Promise<LiveSession> {
    const reason = body.reason ?? 'revoked';
    const tx = em(this.orm);
    const run = await requireRun(tx, runId);
    const targets = await tx.find(LiveSessionSchema, { runId, status: { $in: ACTIVE }, ...(body.provider ? { provider: body.provider } : {}) });
    if (!targets.length) {
      throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `run ${runId} has no active ${body.provider ?? ''} live session to revoke`.replace('  ', ' ') });
    }
    if (isUser(actor) && !opts.approved) {
      // The grants issued on these shares end with them: their holders are whom the revoke acts against.
      const grants = await tx.find(WriteGrantSchema, { sessionId: { $in: targets.map((t) => t.id) }, status: 'active' });
      const targetRoles = await rolesOf(tx, grants.map((g) => g.granteeId));
      await this.gate.check('session.revoke', actor, { runId, runLabels: run.labels, targetRoles, ...(body.provider ? { provider: body.provider } : {}) }, { ...body });
    }
    const revoked: LiveSessionRow[] = [];
    for (const s of targets) {
      // The web share's viewers are the hub's own sockets (on every node); an external
      // share's clients connect to its relay, out of the hub's sight (null).
      const participantsCut = s.provider === 'web' ? await this.notifier.termViewerCount(runId).catch(() => null) : null;
      const row = await tx.transactional((t) => this.transitionIn(t, s, SessionEvent.revoke, { endReason: reason }, actor, 'session.revoke', { participantsCut }));
      if (row) revoked.push(row);
    }
    for (const r of revoked) this.afterEnd(r, reason);
    if (!revoked.length) throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: 'the session changed state meanwhile' });
    return sessionView(revoked[revoked.length - 1]!);
  }

  /**
   * Restarts an external share so its RW credentials change (a write grant that revealed
   * them ended): the session ends as `rotated` and a new one of the same provider takes
   * over the rest of its TTL. Null when the session is no longer active (nothing to do).
   */
  async rotate(sessionId: string): Promise<LiveSession | null> {
    const s = await em(this.orm).findOne(LiveSessionSchema, { id: sessionId });
    if (!s || !isExternal(s.provider) || !ACTIVE.includes(s.status as SessionStatus)) return null;
    const ended = await em(this.orm).transactional((t) => this.transitionIn(t, s, SessionEvent.end, { endReason: 'rotated' }, SYSTEM, 'session.rotate'));
    if (!ended) return null;
    this.afterEnd(ended, 'rotated');
    const remainingMinutes = Math.max(1, Math.ceil((s.expiresAt.getTime() - this.clock.now()) / 60_000));
    const { session } = await this.create(SYSTEM, s.runId, { provider: s.provider as Provider, ttlMinutes: Math.min(remainingMinutes, Math.floor(this.options.maxTtlMs / 60_000)) });
    return session;
  }

  // ── run lifecycle ──────────────────────────────────────────────────────────

  /**
   * The run just started: its default web share, READY at once, in one statement — before the
   * dashboards hear the run is running, so a run seen `running` has its web share (a takeover
   * right away finds it). Nothing when the run's live viewing is off or a web share is already
   * there (`sessions`: the run's sessions as the start read them); `onRunStarted` does the rest.
   * Whether it made one.
   */
  async openStartWebShare(run: RunRow, sessions: LiveSessionRow[]): Promise<boolean> {
    if (!run.liveSessionEnabled || sessions.some((s) => s.provider === 'web' && (ACTIVE as string[]).includes(s.status))) return false;
    const at = this.clock.date();
    const share = { id: uuidv7(), runId: run.id, correlationId: uuidv7(), createdBy: SYSTEM.id, at, expiresAt: new Date(at.getTime() + this.options.ttlMs) };
    const entry = { runId: run.id, sessionId: share.id, correlationId: share.correlationId, actor: SYSTEM };
    const row = await insertStartWebShare(
      em(this.orm), share,
      auditAppendCall({ ...entry, action: 'session.create', metadata: { provider: 'web', ttlMs: this.options.ttlMs } }, at, 's.run_id'),
      auditAppendCall({ ...entry, action: 'session.ready', metadata: { provider: 'web' } }, at),
    );
    if (!row) return false;
    this.notifier.sessionUpdated(sessionView(row));
    void this.events.emit('session.created', { sessionId: row.id });
    return true;
  }

  /**
   * A start report repeated for a run already running (the first one may have failed after
   * the start committed, before its web share was made): the default web share is made if
   * the run never had one. One that was ended or revoked is not brought back.
   */
  async ensureStartWebShare(run: RunRow, sessions: LiveSessionRow[]): Promise<boolean> {
    if (run.status !== 'running' || sessions.some((s) => s.provider === 'web')) return false;
    return this.openStartWebShare(run, sessions);
  }

  /**
   * The run started: its default web session and, when LIVE_SESSION_PROVIDER names tmate
   * or upterm, that share too (as the hub, through the policy gate), plus any sessions
   * waiting for the run. A share that cannot start goes ERROR; the run goes on headless.
   *
   * `repeat`: the worker sent its start report again (the first one's handling may have failed
   * before these reactions ran, or its ack was lost after they ran): a default share is made only
   * if the run never had one of its provider — one that is active stays the only one, and one
   * that was ended or revoked is not brought back — and the waiting ones not yet asked of the
   * worker are asked for.
   */
  async onRunStarted(run: RunRow, { repeat = false }: { repeat?: boolean } = {}): Promise<void> {
    // The run's shares (one read): the ones asked for before it started, still STARTING, among them.
    const all = await em(this.orm).find(LiveSessionSchema, { runId: run.id });
    const active = all.filter((s) => ACTIVE.includes(s.status as SessionStatus));
    const has = (provider: string) => (repeat ? all : active).some((s) => s.provider === provider);
    if (run.liveSessionEnabled) {
      if (!has('web')) {
        await this.create(SYSTEM, run.id, { provider: 'web' }).catch((err: unknown) => {
          if (!isRefusal(err)) throw err; // the caller tries again (see `afterStart` in worker-namespace.ts)
          this.log.warn({ err, runId: run.id }, 'default web session not created');
        });
      }
      const configured = this.options.defaultProvider;
      if (this.options.enabledByDefault && isExternal(configured) && !(repeat && has(configured))) {
        await this.gate
          .check('session.create.external', SYSTEM_GATE_ACTOR, { runId: run.id, runLabels: run.labels, provider: configured, ttlMinutes: Math.ceil(this.options.ttlMs / 60_000) })
          .then(() => this.create(SYSTEM, run.id, { provider: configured }))
          .catch((err: unknown) => {
            if (!isRefusal(err)) throw err; // the caller tries again; a refusal (the policy, a conflict) stands
            this.log.warn({ err, runId: run.id, provider: configured }, 'the configured share was not started');
          });
      }
    }
    // Created above, a share is already READY (web) or already asked of the worker (external).
    // On a repeat, one this worker was already asked for is left alone (its start deadline too).
    const asked = (s: LiveSessionRow) => repeat && s.startRequestedAt !== null && s.workerId === run.workerId;
    for (const s of active.filter((a) => a.status === 'STARTING' && !asked(a))) {
      if (s.provider === 'web') {
        const row = await em(this.orm).transactional((t) => this.transitionIn(t, s, SessionEvent.ready, { readyAt: this.clock.date(), lastHeartbeatAt: this.clock.date(), workerId: run.workerId ?? null }, SYSTEM, 'session.ready'));
        if (row) this.notifier.sessionUpdated(sessionView(row));
      } else if (run.workerId) {
        await em(this.orm).nativeUpdate(LiveSessionSchema, { id: s.id }, { workerId: run.workerId, startRequestedAt: this.clock.date() });
        this.requestShare(s, run.workerId);
      }
    }
  }

  /** Ends (or fails) every active session of a run; REVOKED/ENDED/ERROR ones are left alone. */
  async endAllForRun(runId: string, reason: string, to: 'ENDED' | 'ERROR' = 'ENDED'): Promise<void> {
    const event = to === 'ENDED' ? SessionEvent.end : SessionEvent.fail;
    const active = await em(this.orm).find(LiveSessionSchema, { runId, status: { $in: sessionStatesAllowing(event) } });
    for (const s of active) {
      const extra = to === 'ERROR' ? { endReason: reason, errorMessage: reason } : { endReason: reason };
      const row = await em(this.orm).transactional((t) => this.transitionIn(t, s, event, extra, SYSTEM, to === 'ENDED' ? 'session.end' : 'session.error'));
      if (row) this.afterEnd(row, reason);
    }
  }

  // ── worker reports ─────────────────────────────────────────────────────────

  async onShareReady(workerId: string, sessionId: string, attachRo: Record<string, string>, attachRw: Record<string, string>): Promise<void> {
    const s = await this.ownedSession(workerId, sessionId);
    const sealed = Object.keys(attachRw).length ? this.sealer.seal(JSON.stringify(attachRw), s.id) : null;
    const row = await em(this.orm).transactional((t) =>
      this.transitionIn(t, s, SessionEvent.ready, { readyAt: this.clock.date(), lastHeartbeatAt: this.clock.date(), attachRo, attachRwEnc: sealed }, { type: 'worker', id: workerId }, 'session.ready', { attachRoKeys: Object.keys(attachRo) }),
    );
    if (row) this.notifier.sessionUpdated(sessionView(row));
    // Revoked or expired while starting: the share must not outlive its session.
    else this.notifier.stopShare(workerId, sessionId, 'session no longer active');
  }

  async onShareFailed(workerId: string, sessionId: string, message: string): Promise<void> {
    const s = await this.ownedSession(workerId, sessionId);
    const row = await em(this.orm).transactional((t) =>
      this.transitionIn(t, s, SessionEvent.fail, { errorMessage: message, endReason: 'error' }, { type: 'worker', id: workerId }, 'session.error', { message }),
    );
    if (row) this.notifier.sessionUpdated(sessionView(row));
  }

  /** Whether the worker has READY external shares, i.e. whether its heartbeats' `shares` need reconciling (asked once per hello). */
  async hasExternalShares(workerId: string): Promise<boolean> {
    return (await em(this.orm).count(LiveSessionSchema, { workerId, status: 'READY', provider: { $in: EXTERNAL } })) > 0;
  }

  /**
   * Heartbeat: reconciles the worker's list of live share processes (`shares`) with the
   * hub's: a READY external session the worker no longer runs (its death went unreported,
   * e.g. across a reconnect) fails, and a share the hub already ended is stopped. Sessions
   * that became READY within the last `heartbeatGraceMs` are left alone: the beat may
   * predate them. (Their lastHeartbeatAt is written with the worker's batched heartbeat,
   * see WorkerPresence.) Returns whether the worker still has external shares to watch:
   * the caller checks again only while it does, so share-less workers cost no query per beat.
   */
  async onHeartbeat(workerId: string, shares: string[]): Promise<boolean> {
    const alive = new Set(shares);
    const ready = await em(this.orm).find(LiveSessionSchema, { workerId, status: 'READY', provider: { $in: EXTERNAL } });
    const graceFrom = new Date(this.clock.now() - this.options.heartbeatGraceMs);
    let watched = 0;
    for (const s of ready) {
      if (alive.has(s.id) || !s.readyAt || s.readyAt >= graceFrom) {
        watched += 1;
        continue;
      }
      const message = 'the share process is no longer running on its worker (found by heartbeat)';
      const row = await em(this.orm).transactional((t) => this.transitionIn(t, s, SessionEvent.fail, { errorMessage: message, endReason: 'error' }, SYSTEM, 'session.error', { message }));
      if (row) this.afterEnd(row, 'share gone');
      else watched += 1;
    }
    if (alive.size) {
      const known = await em(this.orm).find(LiveSessionSchema, { id: { $in: [...alive] } });
      const active = new Set(known.filter((k) => ACTIVE.includes(k.status as SessionStatus) && k.workerId === workerId).map((k) => k.id));
      for (const id of alive) if (!active.has(id)) this.notifier.stopShare(workerId, id, 'the session is no longer active');
    }
    return watched > 0 || alive.size > 0;
  }

  // ── shared by the sweeper ──────────────────────────────────────────────────

  /**
   * Applies `event` to the session if (and only if) it is still in the status read
   * earlier, with its audit row, inside `tx`. Returns the updated row or null.
   */
  async transitionIn(
    tx: Em,
    s: LiveSessionRow,
    event: SessionEvent,
    changes: Partial<LiveSessionRow>,
    actor: Actor,
    action: string,
    metadata: Record<string, unknown> = {},
  ): Promise<LiveSessionRow | null> {
    const from = s.status as SessionStatus;
    if (!sessionStatesAllowing(event).includes(from)) return null;
    const next = sessionTransition(from, event);
    const ending = next !== 'STARTING' && next !== 'READY';
    const all = { ...changes, status: next, ...(ending ? { endedAt: this.clock.date() } : {}) };
    const n = await tx.nativeUpdate(LiveSessionSchema, { id: s.id, status: from }, all);
    if (n !== 1) return null;
    await syncWithDatabase(tx, s, all);
    // An ended share's audit row says how long it lived (from creation, and from READY when it got there).
    const lived = ending
      ? { durationMs: all.endedAt!.getTime() - s.createdAt.getTime(), readyDurationMs: s.readyAt ? all.endedAt!.getTime() - s.readyAt.getTime() : null }
      : {};
    await appendAudit(tx, { runId: s.runId, sessionId: s.id, correlationId: s.correlationId, actor, action, metadata: { provider: changes.provider ?? s.provider, ...metadata, ...lived, ...(changes.endReason ? { reason: changes.endReason } : {}) } }, this.clock.date());
    return s;
  }

  /** After a session left the active states: tell dashboards, cut viewers off, kill the share. */
  afterEnd(row: LiveSessionRow, reason: string): void {
    this.notifier.sessionUpdated(sessionView(row));
    void this.events.emit('session.ended', { sessionId: row.id, reason });
    if (row.provider === 'web') {
      if (row.status === 'REVOKED' || row.endReason === 'ttl') this.notifier.closeTerm(row.runId, reason);
    } else if (row.workerId) {
      this.notifier.stopShare(row.workerId, row.id, reason);
    }
  }

  requestShare(row: LiveSessionRow, workerId: string): void {
    const { relay, allowWeb, startTimeoutMs } = this.options;
    this.notifier.startShare(workerId, { sessionId: row.id, runId: row.runId, provider: row.provider as 'tmate' | 'upterm', relay, allowWeb, timeoutMs: startTimeoutMs }, (message) => {
      void (async () => {
        const s = await em(this.orm).findOne(LiveSessionSchema, { id: row.id });
        const failed = s && (await em(this.orm).transactional((t) => this.transitionIn(t, s, SessionEvent.fail, { errorMessage: message, endReason: 'error' }, SYSTEM, 'session.error', { message })));
        if (failed) this.afterEnd(failed, message);
      })().catch((err) => this.log.error({ err, sessionId: row.id }, 'could not fail a refused share'));
    });
  }

  // ── helpers ────────────────────────────────────────────────────────────────

  private async latest(runId: string, provider: Provider): Promise<LiveSession> {
    const sessions = (await this.list(runId)).filter((s) => s.provider === provider);
    const pick = sessions[sessions.length - 1];
    if (!pick) throw new AppError({ code: ErrorCode.NOT_FOUND, message: `run ${runId} has no ${provider} session` });
    return pick;
  }

  private async ownedSession(workerId: string, sessionId: string): Promise<LiveSessionRow> {
    const s = await em(this.orm).findOne(LiveSessionSchema, { id: sessionId });
    if (!s) throw new AppError({ code: ErrorCode.NOT_FOUND, message: `session ${sessionId} not found` });
    await assertRunOwned(em(this.orm), workerId, s.runId, 'share report', this.clock.date());
    return s;
  }
}
