import { runClient } from '../lib/child.js';
import { repeat, type BenchContext, type Figure } from '../lib/figure.js';
import type { FigureResult } from '../lib/report.js';
import { median } from '../lib/stats.js';
import type { FirstFrameParams, FirstFrameResult } from '../clients/first-frame.js';

/** `POST /task-runs` → the run's first output at a dashboard subscribed to its terminal. */
export const firstFrame: Figure = {
  name: 'first-frame',
  async run(ctx: BenchContext): Promise<FigureResult> {
    const n = ctx.quick ? 4 : 20;
    const cluster = await ctx.cluster(1);
    await cluster.startRun('sleep 1'); // the worker is connected and warm
    const results = await repeat(ctx, 'first-frame', () =>
      runClient<FirstFrameResult>('first-frame', { hubUrl: cluster.nodes[0]!.url, token: cluster.operator, n } satisfies FirstFrameParams),
    );
    return {
      name: 'first-frame',
      title: '`POST /task-runs` → first frame at a subscribed dashboard',
      floor: 'plain tmux start → first output: a new tmux server whose pane waits for `wait-for go` while `pipe-pane` attaches, then echoes a line read back from a FIFO (the worker\'s own capture, without the worker), timed in the client process',
      repeats: ctx.repeats,
      stats: [
        {
          label: 'p50', unit: 'ms', handoff: results.map((r) => median(r.handoff)), floor: results.map((r) => median(r.floor)),
          goal: { text: '≤ floor + 30 ms', met: (h, f) => f !== null && h <= f + 30 },
        },
      ],
      notes: [`${n} runs per repeat (after one warm-up), one at a time, alternating with the tmux floor; the dashboard subscribes to the run's terminal right after the REST answer; each run is cancelled and gone before the next, so every run starts on a worker with a free slot.`],
    };
  },
};
