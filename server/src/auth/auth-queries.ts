import type { Em } from '../infra/db/orm.js';

/**
 * Tokens that expired (and were not revoked) or were revoked within the last `windowMs`, by
 * the database clock.
 */
export async function recentlyInvalidatedTokenIds(tx: Em, windowMs: number): Promise<string[]> {
  const rows = await tx.execute<{ id: string }[]>(
    `select id from api_tokens where expires_at is not null and revoked_at is null and expires_at <= now() and expires_at > now() - (? * interval '1 millisecond')
     union select id from api_tokens where revoked_at is not null and revoked_at > now() - (? * interval '1 millisecond')`,
    [windowMs, windowMs],
  );
  return rows.map((r) => r.id);
}
