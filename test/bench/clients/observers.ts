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
   * `throughput`: bytes from the line `BULK-START <epoch ns>` (printed by the sender as it
   * starts) until the text `BULK-END`; bytes / (receipt of BULK-END − that start). Timed from
   * the sender's start, not from the first frame: a burst may arrive in one event.
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
      let startMs = 0;
      let firstText = '';
      // As the dashboard does: frames deduplicated by seq; on `term:resume` (the hub's lag
      // guard skipped this socket and it drained) resubscribe after the last seq it has,
      // holding live frames back until that answer is in.
      let lastSeq = 0;
      let held: Frame[] | null = null;
      const take = (frames: Frame[]) => {
        if (done) return;
        const fresh = frames.filter((f) => f.seq > lastSeq).sort((a, b) => a.seq - b.seq);
        if (fresh.length === 0) return;
        lastSeq = fresh[fresh.length - 1]!.seq;
        const now = nowEpochMs();
        const text = fresh.map((f) => f.data).join('');
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
          if (firstText.length < 300) firstText += text;
          bytes += Buffer.byteLength(text);
          if (!startMs) startMs = Number(/BULK-START (\d{13,})\r?\n/.exec(all)?.[1] ?? 0) / 1e6;
          if (all.includes('BULK-END')) {
            done = true;
            if (startMs) values.push(bytes / 2 ** 20 / (Math.max(1, now - startMs) / 1000));
            else console.error(`observers: BULK-END without a BULK-START stamp after ${bytes} bytes: ${JSON.stringify(firstText.slice(0, 120))}`);
            oneDone();
          }
          tail = all.slice(-64);
        }
      };
      s.on('term:frame', ({ runId, frames }: { runId: string; frames: Frame[] }) => {
        if (runId !== p.runId) return;
        if (held) held.push(...frames);
        else take(frames);
      });
      s.on('term:resume', () => {
        if (held || done) return;
        held = [];
        void (async () => {
          // A long gap comes in pages (`truncated`): ask again after the last seq taken.
          for (;;) {
            const ack = await emitAck<{ frames: Frame[]; truncated?: boolean }>(s, 'term:subscribe', { runId: p.runId, afterSeq: lastSeq });
            if (!ack.ok) break;
            take(ack.data.frames);
            if (!ack.data.truncated || ack.data.frames.length === 0) break;
          }
          const live = held ?? [];
          held = null;
          take(live);
        })();
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
