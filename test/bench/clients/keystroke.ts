import type { Frame } from '@handoff/shared';
import { connect, emitAck } from '../../support/clients.js';
import { serveClient } from '../lib/child.js';
import { tmuxKeystrokes } from './tmux-floor.js';

export interface KeystrokeParams {
  hubUrl: string;
  /** The operator holding the run's write grant. */
  token: string;
  /** A run whose pane runs `cat` (the tty echoes what is typed). */
  runId: string;
  n: number;
}
export interface KeystrokeResult {
  handoff: number[];
  floor: number[];
}

// `term:input` from the grantee's dashboard → the echo in a `term:frame` at that dashboard.
serveClient<KeystrokeParams, KeystrokeResult>(async (p) => {
  const socket = await connect(p.hubUrl, '/dashboard', p.token);
  try {
    let text = '';
    let wake: (() => void) | null = null;
    socket.on('term:frame', ({ runId, frames }: { runId: string; frames: Frame[] }) => {
      if (runId !== p.runId) return;
      text += frames.map((f) => f.data).join('');
      wake?.();
    });
    const sub = await emitAck(socket, 'term:subscribe', { runId: p.runId });
    if (!sub.ok) throw new Error(`term:subscribe: ${sub.error.message}`);
    const echoed = async (token: string, from: number) => {
      const deadline = Date.now() + 10_000;
      while (text.indexOf(token, from) < 0) {
        if (Date.now() > deadline) throw new Error(`no echo of ${token}`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 100);
          wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
      }
    };
    const type = async (data: string) => {
      const ack = await emitAck(socket, 'term:input', { runId: p.runId, data });
      if (!ack.ok) throw new Error(`term:input: ${ack.error.code} ${ack.error.message}`);
    };
    const warmup = 5;
    const handoff: number[] = [];
    for (let i = 0; i < warmup + p.n; i++) {
      const token = `k${i}x`;
      const from = Math.max(0, text.length - token.length);
      const t0 = performance.now();
      await type(token);
      await echoed(token, from);
      if (i >= warmup) handoff.push(performance.now() - t0);
      if (i % 20 === 19) await type('\r');
    }
    const floor = await tmuxKeystrokes(p.n);
    return { handoff, floor };
  } finally {
    socket.close();
  }
});
