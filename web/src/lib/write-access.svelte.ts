import { type GrantWriteBody, grantWriteResponseSchema, type Provider, revokeWriteResponseSchema, type WriteGrant } from '@handoff/shared';
import { Commands } from './commands.svelte.js';
import { api, pendingApprovalId, runPath } from './api.js';
import type { RunDetail } from './run-detail.svelte.js';

/** Grant lengths offered by "Request write access", in minutes (longer ones may need an approver). */
export const GRANT_TTL_CHOICES = [5, 15, 30, 60, 120] as const;
/** The preselected grant length, in minutes (LIVE_RW_GRANT_TTL's default). */
export const DEFAULT_GRANT_TTL_MINUTES = 15;
/** The countdown turns into a warning this long before a grant ends, in ms. */
export const GRANT_WARNING_MS = 60_000;

/** Why a grant ended, as a person would say it (`WriteGrant.endReason`). */
const END_REASONS: Record<string, string> = {
  revoked: 'revoked',
  ttl: 'expired',
  expired: 'expired',
  handback: 'handed back',
  'run-ended': 'run ended',
  'run-cancelled': 'run cancelled',
  rotated: 'its links were rotated',
};

/** Whether `grant` lets its grantee type at `now` (ms): active and not past its expiry. */
export function grantIsLive(grant: WriteGrant, now: number): boolean {
  return grant.status === 'active' && new Date(grant.expiresAt).getTime() > now;
}

/** RW attach data of a grant just issued, held in memory until dismissed (never stored). */
export interface RevealedAttach {
  grantId: string;
  /** tmate/upterm RW attach strings (e.g. `tmate_ssh`). */
  attach: [string, string][];
  webRw: string | null;
}

/** A grant request the policy sent to an approver (APPROVAL_REQUIRED). */
export interface PendingGrant {
  ttlMinutes: number;
  approvalId: string;
}

/** How the signed-in user's latest write grant on this run ended. */
export interface GrantEnd {
  grantId: string;
  reason: string;
}

/**
 * Write access to one run's terminal: who holds a live grant (from `RunDetail`, kept
 * current by `run:updated` and `grant:updated`), the signed-in user's own grant and how
 * it ended, and the commands (`grant-write`, `revoke-write`). Times are judged against a
 * `now` the caller passes (a ticking clock), so a grant ends on screen when its countdown
 * reaches zero even before the hub's sweep says so.
 */
export class WriteAccess extends Commands {
  /** Grant requests waiting for an approver, newest last. */
  pending = $state<PendingGrant[]>([]);
  /** RW attach data from the last grant-write answer: shown once, then forgotten. */
  revealed = $state.raw<RevealedAttach | null>(null);

  readonly #detail: RunDetail;
  readonly #me: () => string | null;
  /** Grants this user released (revoked their own): their end reads "released". */
  #released = $state<string[]>([]);
  /** The ended grant whose notice was dismissed. */
  #dismissedEnd = $state<string | null>(null);

  /** `me`: the signed-in user's id (whoami), null while unknown. */
  constructor(detail: RunDetail, me: () => string | null) {
    super();
    this.#detail = detail;
    this.#me = me;
  }

  /** Live grants at `now`, soonest to end first. */
  live(now: number): WriteGrant[] {
    const grants = this.#detail.run?.writeGrants ?? [];
    return grants.filter((g) => grantIsLive(g, now)).sort((a, b) => a.expiresAt.localeCompare(b.expiresAt));
  }

  /** The signed-in user's live grant at `now`, if any: while it exists their terminal sends keys. */
  mine(now: number): WriteGrant | null {
    const me = this.#me();
    return (me && this.live(now).find((g) => g.granteeId === me)) || null;
  }

  /** How the signed-in user's latest grant ended, unless they hold a live one (or dismissed the notice). */
  ended(now: number): GrantEnd | null {
    const me = this.#me();
    if (!me || this.mine(now)) return null;
    const latest = Object.values(this.#detail.grants)
      .filter((g) => g.granteeId === me)
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id))[0];
    if (!latest || latest.id === this.#dismissedEnd) return null;
    return { grantId: latest.id, reason: this.#endReason(latest, now) };
  }

  dismissEnded(grantId: string): void {
    this.#dismissedEnd = grantId;
  }

  /** Forgets the revealed RW attach data (dismissed, or its grant ended: the provider rotates it). */
  forgetRevealed(): void {
    this.revealed = null;
  }

  dismissPending(approvalId: string): void {
    this.pending = this.pending.filter((p) => p.approvalId !== approvalId);
  }

  /** `POST …/live-session/grant-write`; a long grant may wait for an approver instead. */
  request(token: string, ttlMinutes: number, provider?: Provider): Promise<void> {
    const body: GrantWriteBody = provider ? { ttlMinutes, provider } : { ttlMinutes };
    return this.run('request', async () => {
      try {
        const answer = await api(runPath(this.#detail.runId, '/live-session/grant-write'), { token, method: 'POST', body, schema: grantWriteResponseSchema });
        this.#detail.applyGrant(answer.grant);
        this.#dismissedEnd = null;
        const attach = Object.entries(answer.attachRw ?? {});
        this.revealed = attach.length > 0 || answer.webRw ? { grantId: answer.grant.id, attach, webRw: answer.webRw ?? null } : null;
      } catch (error) {
        const approvalId = pendingApprovalId(error);
        if (!approvalId) throw error;
        this.pending = [...this.pending, { ttlMinutes, approvalId }];
      }
    });
  }

  /**
   * `GET …/live-session/write-grant`: the RW attach data of the signed-in user's live grant
   * again (a grant an approver granted carries none in its outcome).
   */
  reveal(token: string): Promise<void> {
    return this.run('reveal', async () => {
      const answer = await api(runPath(this.#detail.runId, '/live-session/write-grant'), { token, schema: grantWriteResponseSchema });
      this.#detail.applyGrant(answer.grant);
      const attach = Object.entries(answer.attachRw ?? {});
      this.revealed = { grantId: answer.grant.id, attach, webRw: answer.webRw ?? null };
    });
  }

  /** Ends the signed-in user's own grant now: their input stops at once. */
  release(token: string, grant: WriteGrant): Promise<void> {
    this.#released = [...this.#released, grant.id];
    return this.run('release', () => this.#revoke(token, grant.id));
  }

  /** Ends someone's grant now (operators). */
  revoke(token: string, grant: WriteGrant): Promise<void> {
    return this.run(`revoke:${grant.id}`, () => this.#revoke(token, grant.id));
  }

  async #revoke(token: string, grantId: string): Promise<void> {
    const { grants } = await api(runPath(this.#detail.runId, '/live-session/revoke-write'), { token, method: 'POST', body: { grantId }, schema: revokeWriteResponseSchema });
    for (const grant of grants) this.#detail.applyGrant(grant);
  }

  #endReason(grant: WriteGrant, now: number): string {
    if (grant.status === 'active') return new Date(grant.expiresAt).getTime() <= now ? 'expired' : 'ended';
    if (this.#released.includes(grant.id) && grant.status === 'revoked') return 'released';
    const reason = grant.endReason ?? grant.status;
    // Grants end with the live session they were issued on: `session-<why it ended>`.
    if (reason.startsWith('session-')) return `live session ended: ${END_REASONS[reason.slice(8)] ?? reason.slice(8)}`;
    return END_REASONS[reason] ?? reason;
  }
}
