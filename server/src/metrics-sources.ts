import type { Server } from 'socket.io';
import { NAMESPACE, RunStatus } from '@handoff/shared';
import { em, type Orm } from './db/orm.js';
import type { GaugeSources } from './metrics.js';
import type { Leadership } from './services/leader.js';

/** A leadership that remembers its last answer, so a scrape reads it without renewing (or taking) the lease. */
export function observedLeadership(inner: Leadership): Leadership & { last(): { leading: boolean; lastLeadAt: number | null } } {
  let leading = false;
  let lastLeadAt: number | null = null;
  return {
    async isLeader() {
      leading = await inner.isLeader().catch(() => false);
      if (leading) lastLeadAt = Date.now();
      return leading;
    },
    async release() {
      leading = false;
      await inner.release();
    },
    last: () => ({ leading, lastLeadAt }),
  };
}

/** The gauges' sources for one hub node: local socket counts, one grouped query per cluster-wide gauge. */
export function gaugeSources(orm: Orm, io: Server, leadership: { last(): { leading: boolean; lastLeadAt: number | null } }): GaugeSources {
  return {
    socketsByNamespace: () => Object.fromEntries(Object.values(NAMESPACE).map((ns) => [ns, io.of(ns).sockets.size])),
    async runsByStatus() {
      const rows = await em(orm).execute<Array<{ status: string; n: string }>>('select status, count(*) as n from runs group by status');
      // Every status appears (0 when none), so dashboards don't see series vanish.
      const counts = new Map<string, number>(Object.values(RunStatus).map((s) => [s, 0]));
      for (const r of rows) counts.set(r.status, Number(r.n));
      return [...counts].map(([status, n]) => ({ status, n }));
    },
    async sessionsByProviderStatus() {
      const rows = await em(orm).execute<Array<{ provider: string; status: string; n: string }>>('select provider, status, count(*) as n from live_sessions group by provider, status');
      return rows.map((r) => ({ provider: r.provider, status: r.status, n: Number(r.n) }));
    },
    async connectedWorkers() {
      const [row] = await em(orm).execute<Array<{ n: string }>>(`select count(*) as n from workers where status = 'online'`);
      return Number(row?.n ?? 0);
    },
    leader: () => leadership.last(),
  };
}
