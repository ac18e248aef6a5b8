import { REDIS_URL } from '../../support/db.js';
import { startBareServer } from '../lib/bare.js';
import { runClient } from '../lib/child.js';
import { repeat, type BenchContext, type Figure } from '../lib/figure.js';
import type { FigureResult } from '../lib/report.js';
import { percentile } from '../lib/stats.js';
import type { ControlPushParams, ControlPushResult } from '../clients/control-push.js';

/**
 * Control push, REST → worker applied: a hard pause / resume alternately, timed from the REST
 * call to the dashboard seeing `control.appliedSeq` reach the pushed seq. One node, or two
 * (REST and dashboard on node A, the worker on node B, fan-out through the Redis adapter).
 */
function controlPush(nodes: 1 | 2): Figure {
  const name = nodes === 1 ? 'control-push' : 'control-push-2-nodes';
  return {
    name,
    async run(ctx: BenchContext): Promise<FigureResult> {
      const n = ctx.quick ? 20 : 200;
      const cluster = await ctx.cluster(nodes);
      const bare = await startBareServer();
      const runId = await cluster.startRun('while true; do sleep 0.2; done');
      try {
        const a = cluster.nodes[0]!;
        const results = await repeat(ctx, name, () =>
          runClient<ControlPushResult>('control-push', {
            restUrl: a.url, dashUrl: a.url, token: cluster.operator, runId, n, bareUrl: bare.url, ...(nodes === 2 ? { redisUrl: REDIS_URL } : {}),
          } satisfies ControlPushParams),
        );
        const floorAt = (r: ControlPushResult, p: number) => percentile(r.bare, p) + (r.redis ? percentile(r.redis, p) : 0);
        const goalP99 = nodes === 1 ? 15 : 25;
        return {
          name,
          title: nodes === 1 ? 'control push, REST → worker applied, 1 node' : 'control push across 2 nodes (REST on A, worker on B)',
          floor: nodes === 1
            ? 'bare socket.io server + client ack round trip (server in the bench process, client in the client process)'
            : 'bare socket.io ack round trip + Redis PUBLISH → subscriber (ioredis), each statistic the sum of the two',
          repeats: ctx.repeats,
          stats: [
            { label: 'p50', unit: 'ms', handoff: results.map((r) => percentile(r.push, 50)), floor: results.map((r) => floorAt(r, 50)) },
            {
              label: 'p99', unit: 'ms', handoff: results.map((r) => percentile(r.push, 99)), floor: results.map((r) => floorAt(r, 99)),
              goal: { text: `p99 ≤ ${goalP99} ms`, met: (h) => h <= goalP99 },
            },
          ],
          notes: [
            `${n} control changes per repeat (hard pause and resume alternately, after 4 warm-up ones) on one running run; the client (REST + a dashboard socket subscribed to the run) runs in its own process.`,
            ...(nodes === 2 ? [`Redis PUBLISH → subscriber p50 ${results.map((r) => percentile(r.redis ?? [], 50).toFixed(2)).join(' / ')} ms, p99 ${results.map((r) => percentile(r.redis ?? [], 99).toFixed(2)).join(' / ')} ms per repeat.`] : []),
          ],
        };
      } finally {
        await cluster.cancel(runId);
        await bare.close();
      }
    },
  };
}

export const controlPush1 = controlPush(1);
export const controlPush2 = controlPush(2);
