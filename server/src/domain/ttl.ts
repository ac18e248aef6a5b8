import { AppError, ErrorCode } from '@handoff/shared';

/**
 * A requested TTL in ms: 1 minute up to `maxMs`, else a VALIDATION error naming the
 * setting that bounds it (e.g. LIVE_SESSION_MAX_TTL, LIVE_RW_GRANT_MAX_TTL).
 */
export function boundedTtlMs(ttlMinutes: number, maxMs: number, setting: string): number {
  const ttlMs = ttlMinutes * 60_000;
  if (!(ttlMinutes >= 1) || ttlMs > maxMs) {
    throw new AppError({ code: ErrorCode.VALIDATION, message: `ttlMinutes must be between 1 and ${Math.floor(maxMs / 60_000)} (${setting})` });
  }
  return ttlMs;
}
