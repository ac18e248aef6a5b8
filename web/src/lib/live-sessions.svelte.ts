import { type LiveSession, type Provider, sessionResponseSchema } from '@handoff/shared';
import { Commands } from './commands.svelte.js';
import { api, pendingApprovalId, runPath } from './api.js';
import type { HubConnection } from './hub.svelte.js';
import type { RunDetail } from './run-detail.svelte.js';

/** What the Extend button adds to a session's remaining time, in minutes. */
export const EXTEND_BY_MINUTES = 30;

/** A share request the policy sent to an approver (APPROVAL_REQUIRED). */
export interface PendingShare {
  provider: Provider;
  approvalId: string;
}

/** `session:grace`: a session that expires soon. */
export interface GraceWarning {
  sessionId: string;
  expiresAt: string;
}

/** The TTL (minutes from now) that adds EXTEND_BY_MINUTES to what is left of `expiresAt`. */
export function extendedTtlMinutes(expiresAt: string, now: number): number {
  const left = Math.max(0, Math.ceil((new Date(expiresAt).getTime() - now) / 60_000));
  return left + EXTEND_BY_MINUTES;
}

/**
 * The share commands of one run (create, extend, revoke) and the hub's grace warnings.
 * The sessions themselves live in `RunDetail.run.sessions`, kept current by
 * `session:updated`.
 */
export class LiveSessionControls extends Commands {
  /** Share requests waiting for an approver, newest last. */
  pending = $state<PendingShare[]>([]);
  /** Sessions about to expire, as pushed; cleared when extended or ended. */
  warnings = $state<GraceWarning[]>([]);

  readonly #detail: RunDetail;

  constructor(detail: RunDetail) {
    super();
    this.#detail = detail;
  }

  /** Follows `session:grace` and the session updates that settle a warning. Returns an off function. */
  follow(hub: HubConnection): () => void {
    const offGrace = hub.on('session:grace', ({ sessionId, runId, expiresAt }) => {
      if (runId !== this.#detail.runId) return;
      this.warnings = [...this.warnings.filter((w) => w.sessionId !== sessionId), { sessionId, expiresAt }];
    });
    const offSession = hub.on('session:updated', (session) => {
      const settled = session.status !== 'READY' && session.status !== 'STARTING';
      // An extension moves expiresAt and re-arms the warning.
      this.warnings = this.warnings.filter((w) => w.sessionId !== session.id || (!settled && w.expiresAt === session.expiresAt));
    });
    return () => {
      offGrace();
      offSession();
    };
  }

  dismissWarning(sessionId: string): void {
    this.warnings = this.warnings.filter((w) => w.sessionId !== sessionId);
  }

  dismissPending(approvalId: string): void {
    this.pending = this.pending.filter((p) => p.approvalId !== approvalId);
  }

  /** `POST …/live-session`; an external provider may wait for approval instead. */
  share(token: string, provider: Provider): Promise<void> {
    return this.run(`share:${provider}`, async () => {
      try {
        const { session } = await api(runPath(this.#detail.runId, '/live-session'), { token, method: 'POST', body: { provider }, schema: sessionResponseSchema });
        this.#detail.addSession(session);
      } catch (error) {
        const approvalId = pendingApprovalId(error);
        if (!approvalId) throw error;
        this.pending = [...this.pending.filter((p) => p.provider !== provider), { provider, approvalId }];
      }
    });
  }

  /** `POST …/live-session/extend`: what is left plus EXTEND_BY_MINUTES. */
  extend(token: string, session: LiveSession, now = Date.now()): Promise<void> {
    const body = { ttlMinutes: extendedTtlMinutes(session.expiresAt, now), provider: session.provider };
    return this.run(`extend:${session.id}`, () => api(runPath(this.#detail.runId, '/live-session/extend'), { token, method: 'POST', body, schema: sessionResponseSchema }));
  }

  /** `POST …/live-session/revoke` of this session's provider: its viewers are cut off at once. */
  revoke(token: string, session: LiveSession, reason: string): Promise<void> {
    const body = { provider: session.provider, reason };
    return this.run(`revoke:${session.id}`, () => api(runPath(this.#detail.runId, '/live-session/revoke'), { token, method: 'POST', body, schema: sessionResponseSchema }));
  }
}
