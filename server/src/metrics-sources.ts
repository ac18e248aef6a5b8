import type { Server } from 'socket.io';
import { NAMESPACE, RunStatus } from '@handoff/shared';
import { em, type Orm } from './infra/db/orm.js';
import type { GaugeSources } from './metrics.js';
import type { Leadership } from './infra/leader.js';
import { countOnlineWorkers, countRunsByStatus, countSessionsByProviderStatus } from './metrics-queries.js';

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
      const rows = await countRunsByStatus(em(orm));
      // Every status appears (0 when none), so dashboards don't see series vanish.
      const counts = new Map<string, number>(Object.values(RunStatus).map((s) => [s, 0]));
      for (const r of rows) counts.set(r.status, r.n);
      return [...counts].map(([status, n]) => ({ status, n }));
    },
    async sessionsByProviderStatus() {
      return countSessionsByProviderStatus(em(orm));
    },
    async connectedWorkers() {
      return countOnlineWorkers(em(orm));
    },
    leader: () => leadership.last(),
  };
}
