import type { SessionStatus } from '@handoff/shared';
import { LiveSessionSchema, type RunRow } from '../db/entities.js';
import { em, type Orm } from '../db/orm.js';
import { SessionEvent, sessionStatesAllowing, sessionTransition } from '../domain/live-session-machine.js';
import { appendAudit, SYSTEM } from './audit.js';
import { uuidv7 } from './ids.js';
import type { Notifier } from './notifier.js';
import { sessionView } from './views.js';

export interface LiveSessionOptions {
  /** Default session TTL in ms (LIVE_SESSION_TTL). */
  ttlMs: number;
}

/**
 * Live sessions (terminal shares). This first cut covers the built-in `web` provider:
 * the hub itself streams the pane, so a web session is READY as soon as the run runs.
 */
export class LiveSessionService {
  constructor(
    private readonly orm: Orm,
    private readonly notifier: Notifier,
    private readonly options: LiveSessionOptions,
  ) {}

  async onRunStarted(run: RunRow): Promise<void> {
    if (!run.liveSessionEnabled) return;
    const now = new Date();
    const correlationId = uuidv7();
    const session = await em(this.orm).transactional(async (tx) => {
      const row = tx.create(LiveSessionSchema, {
        id: uuidv7(), runId: run.id, provider: 'web', status: sessionTransition('DISABLED', SessionEvent.start),
        workerId: run.workerId ?? null, correlationId, createdBy: SYSTEM.id, createdAt: now, readyAt: null, endedAt: null,
        expiresAt: new Date(now.getTime() + this.options.ttlMs), graceWarnedAt: null, lastHeartbeatAt: now,
        endReason: null, errorMessage: null, attachRo: null, attachRwEnc: null,
      });
      await tx.flush();
      await appendAudit(tx, { runId: run.id, sessionId: row.id, correlationId, actor: SYSTEM, action: 'session.create', metadata: { provider: 'web' } });
      row.status = sessionTransition(row.status as SessionStatus, SessionEvent.ready);
      row.readyAt = new Date();
      await tx.flush();
      await appendAudit(tx, { runId: run.id, sessionId: row.id, correlationId, actor: SYSTEM, action: 'session.ready', metadata: { provider: 'web' } });
      return row;
    });
    this.notifier.sessionUpdated(sessionView(session));
  }

  /** Ends (or fails) every active session of a run; REVOKED/ENDED/ERROR ones are left alone. */
  async endAllForRun(runId: string, reason: string, to: 'ENDED' | 'ERROR' = 'ENDED'): Promise<void> {
    const event = to === 'ENDED' ? SessionEvent.end : SessionEvent.fail;
    const tx = em(this.orm);
    const active = await tx.find(LiveSessionSchema, { runId, status: { $in: sessionStatesAllowing(event) } });
    for (const s of active) {
      const ended = await tx.transactional(async (t) => {
        const now = new Date();
        const next = sessionTransition(s.status as SessionStatus, event);
        const changes = to === 'ENDED' ? { status: next, endedAt: now, endReason: reason } : { status: next, endedAt: now, endReason: reason, errorMessage: reason };
        const n = await t.nativeUpdate(LiveSessionSchema, { id: s.id, status: s.status }, changes);
        if (n !== 1) return null;
        await appendAudit(t, { runId, sessionId: s.id, correlationId: s.correlationId, actor: SYSTEM, action: to === 'ENDED' ? 'session.end' : 'session.error', metadata: { reason } });
        return Object.assign(s, changes);
      });
      if (ended) this.notifier.sessionUpdated(sessionView(ended));
    }
  }
}
