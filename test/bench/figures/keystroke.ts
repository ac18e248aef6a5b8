import { api } from '../../support/clients.js';
import { runClient } from '../lib/child.js';
import { repeat, type BenchContext, type Figure } from '../lib/figure.js';
import type { FigureResult } from '../lib/report.js';
import { percentile } from '../lib/stats.js';
import type { KeystrokeParams, KeystrokeResult } from '../clients/keystroke.js';

/** A keystroke (`term:input` from the dashboard holding a write grant) → its echo frame at that dashboard. */
export const keystroke: Figure = {
  name: 'keystroke',
  async run(ctx: BenchContext): Promise<FigureResult> {
    const n = ctx.quick ? 20 : 200;
    const cluster = await ctx.cluster(1);
    const hub = cluster.nodes[0]!;
    const runId = await cluster.startRun('exec cat');
    try {
      const granted = await api(hub.url, cluster.operator, 'POST', `/api/task-runs/${runId}/live-session/grant-write`, { ttlMinutes: 30 });
      if (granted.status !== 200) throw new Error(`grant-write answered ${granted.status}: ${JSON.stringify(granted.body)}`);
      const results = await repeat(ctx, 'keystroke', () =>
        runClient<KeystrokeResult>('keystroke', { hubUrl: hub.url, token: cluster.operator, runId, n } satisfies KeystrokeParams),
      );
      const stat = (label: string, p: number) => ({
        label, unit: 'ms',
        handoff: results.map((r) => percentile(r.handoff, p)),
        floor: results.map((r) => percentile(r.floor, p)),
      });
      return {
        name: 'keystroke',
        title: 'keystroke (`term:input`) → echo frame at the dashboard',
        floor: '`tmux send-keys -l` → the echo in the `pipe-pane` output (a plain tmux server running `cat`, read from a FIFO), timed in the client process',
        repeats: ctx.repeats,
        stats: [
          stat('p50', 50),
          { ...stat('p99', 99), goal: { text: 'p99 ≤ floor p99 + 5 ms', met: (h: number, f: number | null) => f !== null && h <= f + 5 } },
        ],
        notes: [`${n} keystrokes per repeat (a 3–5 character token each, after 5 warm-up ones) into a run whose pane runs \`cat\`, typed by the operator holding a write grant on the run's web share (grant-write, no takeover); the echo is the tty's.`],
      };
    } finally {
      await cluster.cancel(runId);
    }
  },
};
