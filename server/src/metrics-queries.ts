import type { Em } from './infra/db/orm.js';

// The cluster-wide gauges' counts: one grouped query each, read at scrape time.

/** Runs by status (only the statuses that have runs). */
export async function countRunsByStatus(tx: Em): Promise<{ status: string; n: number }[]> {
  const rows = await tx.execute<Array<{ status: string; n: string }>>('select status, count(*) as n from runs group by status');
  return rows.map((r) => ({ status: r.status, n: Number(r.n) }));
}

/** Live sessions by provider and status (only the pairs that have sessions). */
export async function countSessionsByProviderStatus(tx: Em): Promise<{ provider: string; status: string; n: number }[]> {
  const rows = await tx.execute<Array<{ provider: string; status: string; n: string }>>('select provider, status, count(*) as n from live_sessions group by provider, status');
  return rows.map((r) => ({ provider: r.provider, status: r.status, n: Number(r.n) }));
}

/** Workers online now. */
export async function countOnlineWorkers(tx: Em): Promise<number> {
  const [row] = await tx.execute<Array<{ n: string }>>(`select count(*) as n from workers where status = 'online'`);
  return Number(row?.n ?? 0);
}
