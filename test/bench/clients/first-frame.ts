import type { Frame } from '@handoff/shared';
import { api, connect, emitAck } from '../../support/clients.js';
import { serveClient } from '../lib/child.js';
import { tmuxFirstOutput } from './tmux-floor.js';

export interface FirstFrameParams {
  hubUrl: string;
  token: string;
  n: number;
}
export interface FirstFrameResult {
  handoff: number[];
  floor: number[];
}

// POST /task-runs → the run's first output at a dashboard that subscribed to its terminal
// right after creating it (scrollback in the subscribe ack or a live term:frame, whichever first).
serveClient<FirstFrameParams, FirstFrameResult>(async (p) => {
  const socket = await connect(p.hubUrl, '/dashboard', p.token);
  try {
    let text = '';
    let target = '';
    let done: (() => void) | null = null;
    const take = (runId: string, frames: Frame[]) => {
      if (runId !== target) return;
      text += frames.map((f) => f.data).join('');
      if (text.includes(`${target.slice(0, 8)}-first`)) done?.();
    };
    socket.on('term:frame', ({ runId, frames }: { runId: string; frames: Frame[] }) => take(runId, frames));
    const handoff: number[] = [];
    const floor: number[] = [];
    for (let i = 0; i < p.n + 1; i++) {
      // Alternate with the floor so both see the same machine load.
      const f = await tmuxFirstOutput();
      text = '';
      const seen = new Promise<void>((resolve) => (done = resolve));
      const t0 = performance.now();
      // The run prints a marker made of its own id ($HANDOFF_RUN_ID), so no earlier run's output can match.
      const res = await api(p.hubUrl, p.token, 'POST', '/api/task-runs', { command: { script: 'echo "${HANDOFF_RUN_ID%%-*}-first"; sleep 0.5' } });
      if (res.status >= 300) throw new Error(`POST /task-runs answered ${res.status}: ${JSON.stringify(res.body)}`);
      target = res.body.id as string;
      const ack = await emitAck<{ frames: Frame[] }>(socket, 'term:subscribe', { runId: target });
      if (!ack.ok) throw new Error(`term:subscribe: ${ack.error.message}`);
      take(target, ack.data.frames);
      await Promise.race([seen, new Promise((_, reject) => setTimeout(() => reject(new Error('no first frame in 20 s')), 20_000))]);
      const t = performance.now() - t0;
      await emitAck(socket, 'term:unsubscribe', { runId: target });
      // Each run starts on an idle worker: the previous one is cancelled and gone before the next
      // (otherwise runs pile up to the worker's capacity and a new one waits for a slot).
      await api(p.hubUrl, p.token, 'POST', `/api/task-runs/${target}/cancel`, {});
      for (let polls = 0; ; polls++) {
        const run = await api(p.hubUrl, p.token, 'GET', `/api/task-runs/${target}`);
        if (['cancelled', 'succeeded', 'failed', 'lost'].includes(run.body.status as string)) break;
        if (polls > 500) throw new Error(`run ${target} did not end after its cancel`);
        await new Promise((r) => setTimeout(r, 20));
      }
      if (i > 0) { // the first of each is a warm-up
        handoff.push(t);
        floor.push(f);
      }
    }
    return { handoff, floor };
  } finally {
    socket.close();
  }
});
