import type { Socket } from 'socket.io-client';
import type { Frame } from '@handoff/shared';
import { connect, emitAck } from '../../support/clients.js';
import { serveClient } from '../lib/child.js';

export interface ObserversParams {
  url: string;
  /** Hub: a dashboard token (sockets subscribe with `term:subscribe`); bare server: null (sockets `join` the room). */
  token: string | null;
  runId: string;
  sockets: number;
  /**
   * `latency`: lines `ts <epoch ns> <i>` until `<i> = lines`; each line's print → receipt time.
   * `throughput`: bytes until the text `BULK-END`; bytes / (last − first frame time).
   */
  mode: 'latency' | 'throughput';
  lines: number;
}
export interface ObserversResult {
  /** latency: ms per received line (all sockets); throughput: MiB/s per socket. */
  values: number[];
  /** Sockets that did not see everything before the deadline. */
  incomplete: number;
}

const nowEpochMs = () => performance.timeOrigin + performance.now();

// Many dashboards watching one run's terminal, in a process of their own: reports `ready`
// once all are subscribed (the runner then makes the run print), and measures what arrives.
serveClient<ObserversParams, ObserversResult>(async (p, ctx) => {
  const sockets: Socket[] = [];
  try {
    const values: number[] = [];
    let complete = 0;
    let allDone: () => void = () => undefined;
    const finished = new Promise<void>((resolve) => (allDone = resolve));
    const oneDone = () => {
      complete += 1;
      if (complete === p.sockets) allDone();
    };
    for (let i = 0; i < p.sockets; i++) {
      const s = await connect(p.url, p.token ? '/dashboard' : '/', p.token ?? undefined);
      sockets.push(s);
      let done = false;
      let tail = '';
      let bytes = 0;
      let first = 0;
      s.on('term:frame', ({ runId, frames }: { runId: string; frames: Frame[] }) => {
        if (runId !== p.runId || done) return;
        const now = nowEpochMs();
        const text = frames.map((f) => f.data).join('');
        const all = tail + text;
        if (p.mode === 'latency') {
          for (const m of all.matchAll(/ts (\d{13,}) (\d+)\r?\n/g)) {
            values.push(now - Number(m[1]) / 1e6);
            if (Number(m[2]) === p.lines) {
              done = true;
              oneDone();
            }
          }
          tail = all.slice(all.lastIndexOf('\n') + 1);
        } else {
          if (!first) first = now;
          bytes += Buffer.byteLength(text);
          if (all.includes('BULK-END')) {
            done = true;
            values.push(bytes / 2 ** 20 / ((now - first) / 1000));
            oneDone();
          }
          tail = all.slice(-16);
        }
      });
      const ack = p.token ? await emitAck(s, 'term:subscribe', { runId: p.runId }) : await emitAck(s, 'join', p.runId);
      if (!ack.ok) throw new Error(`subscribe: ${ack.error.message}`);
    }
    ctx.event('ready');
    await Promise.race([finished, new Promise((resolve) => setTimeout(resolve, 120_000))]);
    return { values, incomplete: p.sockets - complete };
  } finally {
    for (const s of sockets) s.close();
  }
});
