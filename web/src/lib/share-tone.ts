import type { LiveSession } from '@handoff/shared';

/** How long before expiry a share shows its grace colour when the hub has not warned yet (the default LIVE_GRACE), ms. */
export const GRACE_MS = 5 * 60_000;

/** The colour of a share badge: live, in its grace period, starting, or past its expiry. */
export type ShareTone = 'live' | 'grace' | 'starting' | 'expired';

export function shareTone(session: Pick<LiveSession, 'status' | 'expiresAt' | 'graceWarnedAt'>, now: number): ShareTone {
  const left = new Date(session.expiresAt).getTime() - now;
  if (left <= 0) return 'expired';
  if (session.status === 'STARTING') return 'starting';
  // The hub's warning is the authority (its LIVE_GRACE may differ); the fallback covers a missed push.
  return session.graceWarnedAt !== null || left <= GRACE_MS ? 'grace' : 'live';
}

/** The shares a list badge shows: starting or live, oldest first. */
export function activeShares<T extends Pick<LiveSession, 'status'>>(sessions: readonly T[]): T[] {
  return sessions.filter((s) => s.status === 'READY' || s.status === 'STARTING');
}
