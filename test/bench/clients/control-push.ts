import type { Run } from '@handoff/shared';
import { api, Viewer } from '../../support/clients.js';
import { serveClient } from '../lib/child.js';
import { bareAckRtts, redisPubSub } from './socket-floor.js';

export interface ControlPushParams {
  /** Node receiving the REST call. */
  restUrl: string;
  /** Node the dashboard observing `run:updated` is connected to. */
  dashUrl: string;
  token: string;
  runId: string;
  n: number;
  bareUrl: string;
  /** Also measure Redis PUBLISH → subscriber (the 2-node floor). */
  redisUrl?: string;
}
export interface ControlPushResult {
  push: number[];
  bare: number[];
  redis: number[] | null;
}

// REST control call → the dashboard sees `control.appliedSeq` reach the pushed seq (the worker applied it).
serveClient<ControlPushParams, ControlPushResult>(async (p) => {
  const viewer = await Viewer.connect(p.dashUrl, p.token);
  try {
    const sub = await viewer.socket.timeout(10_000).emitWithAck('run:subscribe', { runId: p.runId });
    if (!sub.ok) throw new Error(`run:subscribe: ${sub.error.message}`);
    const applied = (seq: number) =>
      viewer.until(`seq ${seq} applied`, () => {
        const r: Run | undefined = viewer.runs.get(p.runId);
        return r && r.control.appliedSeq >= seq ? r : undefined;
      }, 20_000);
    const push: number[] = [];
    const warmup = 4;
    let paused = false;
    for (let i = 0; i < warmup + p.n; i++) {
      const t = performance.now();
      const res = await api(p.restUrl, p.token, 'POST', `/api/task-runs/${p.runId}/control`, paused ? { action: 'resume' } : { action: 'pause', mode: 'hard' });
      if (res.status !== 200) throw new Error(`control answered ${res.status}: ${JSON.stringify(res.body)}`);
      await applied(res.body.control.seq as number);
      if (i >= warmup) push.push(performance.now() - t);
      paused = !paused;
    }
    // Leave the run unpaused.
    if (paused) await api(p.restUrl, p.token, 'POST', `/api/task-runs/${p.runId}/control`, { action: 'resume' });
    const bare = await bareAckRtts(p.bareUrl, p.n);
    const redis = p.redisUrl ? await redisPubSub(p.redisUrl, p.n) : null;
    return { push, bare, redis };
  } finally {
    viewer.close();
  }
});
