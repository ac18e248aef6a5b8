import { randomBytes } from 'node:crypto';
import { REDIS_URL } from '../../support/db.js';
import { startBareServer } from '../lib/bare.js';
import { startClient } from '../lib/child.js';
import { repeat, type BenchContext, type Figure } from '../lib/figure.js';
import type { FigureResult } from '../lib/report.js';
import { median } from '../lib/stats.js';
import { redisPubSub } from '../clients/socket-floor.js';
import type { ViewersCutParams, ViewersCutResult } from '../clients/viewers-cut.js';

const nowEpochMs = () => performance.timeOrigin + performance.now();

/** Starts the viewers, waits until all are subscribed, says go (after `beforeGo`), returns what they saw. */
async function cutPass(p: ViewersCutParams, beforeGo: () => number | null = () => null): Promise<{ allCutMs: number; missing: number }> {
  const client = startClient<ViewersCutResult>('viewers-cut', p);
  try {
    await Promise.race([client.nextEvent(), client.result]);
    const t0Here = beforeGo();
    client.send('go');
    const r = await client.result;
    const t0 = r.t0 ?? t0Here!;
    return { allCutMs: Math.max(...r.cuts) - t0, missing: r.missing };
  } finally {
    await client.kill();
  }
}

/**
 * Revoke → all viewers cut, on two nodes: viewers on node A and node B watch a run whose worker
 * is on node B; the revoke goes to node A (REST, from the viewers' client process), timed until
 * the last viewer got `term:closed`.
 */
export const revokeTwoNodes: Figure = {
  name: 'revoke-2-nodes',
  async run(ctx: BenchContext): Promise<FigureResult> {
    const perNode = ctx.quick ? 10 : 50;
    const cluster = await ctx.cluster(2);
    const bare = await startBareServer();
    try {
      const [a, b] = cluster.nodes as [typeof cluster.nodes[0], typeof cluster.nodes[0]];
      const results = await repeat(ctx, 'revoke-2-nodes', async () => {
        const runId = await cluster.startRun('while true; do echo tick; sleep 0.1; done');
        const handoff = await cutPass({ urls: [a.url, b.url], perUrl: perNode, token: cluster.operator, runId, revokeVia: a.url }).finally(() => cluster.cancel(runId));
        const room = `bare-${randomBytes(4).toString('hex')}`;
        const floorBroadcast = await cutPass({ urls: [bare.url], perUrl: 2 * perNode, token: null, runId: room }, () => {
          const t0 = nowEpochMs();
          bare.io.to(room).emit('term:closed', { runId: room, reason: 'bench' });
          return t0;
        });
        const redis = median(await redisPubSub(REDIS_URL, 20));
        return { handoff, floor: floorBroadcast.allCutMs + redis, redis, floorBroadcast };
      });
      return {
        name: 'revoke-2-nodes',
        title: 'revoke → all viewers cut, two nodes',
        floor: 'a bare socket.io broadcast to the same number of clients (until the last one got it) + Redis PUBLISH → subscriber p50',
        repeats: ctx.repeats,
        stats: [
          {
            label: `all ${2 * perNode} viewers cut`, unit: 'ms', handoff: results.map((r) => r.handoff.allCutMs), floor: results.map((r) => r.floor),
            goal: { text: '< 1 s (DESIGN.md: p95 < 1 s)', met: (h) => h < 1000 },
          },
        ],
        notes: [
          `${perNode} viewers on node A and ${perNode} on node B (one client process) subscribed to the terminal of a run printing every 100 ms on node B's worker; the same client process revokes the web share through node A's REST API and records when each viewer gets \`term:closed\`. Viewers never cut within 10 s, per repeat: ${results.map((r) => r.handoff.missing).join(', ')}.`,
        ],
      };
    } finally {
      await bare.close();
    }
  },
};
