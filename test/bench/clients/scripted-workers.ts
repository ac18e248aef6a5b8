import type { Socket } from 'socket.io-client';
import { connect, emitAck } from '../../support/clients.js';
import { serveClient } from '../lib/child.js';

export interface ScriptedWorkersParams {
  url: string;
  /** One worker token per socket (hub); null → that many sockets to the bare server. */
  tokens: string[] | null;
  sockets: number;
  /** Heartbeat interval for the bare server (the hub's comes in its hello answer). */
  intervalMs: number;
}
export interface ScriptedWorkersResult {
  connected: number;
  connectMs: number;
  /** Heartbeat (or bare ping) ack round trips, ms. */
  acks: number[];
  /** Heartbeats sent but never answered (or answered with an error). */
  unanswered: number;
  disconnects: number;
  /** Hub only: when each worker's hello was answered (epoch ms), by worker id. */
  helloAt: Record<string, number>;
}

/** At most this many handshakes at once (like a fleet of workers starting, not one burst). */
const CONNECT_CONCURRENCY = 20;

// Scripted workers: a socket on /worker each, `worker:hello`, then `worker:heartbeat` at the
// hub's interval (first beats jittered over one interval). Connects half, reports, waits for
// the runner's go, connects the rest, reports, heartbeats until the runner says stop.
serveClient<ScriptedWorkersParams, ScriptedWorkersResult>(async (p, ctx) => {
  const sockets: Socket[] = [];
  const timers: NodeJS.Timeout[] = [];
  const acks: number[] = [];
  let unanswered = 0;
  let disconnects = 0;
  let measuring = true;
  const helloAt: Record<string, number> = {};
  try {
    let intervalMs = p.intervalMs;
    let next = 0;
    let connectMs = 0;
    const beat = (s: Socket) => {
      const t = performance.now();
      (p.tokens ? emitAck(s, 'worker:heartbeat', { activeRuns: 0, shares: [] }) : emitAck(s, 'ping', {})).then(
        (ack) => {
          if (!measuring) return;
          if (ack.ok) acks.push(performance.now() - t);
          else unanswered += 1;
        },
        () => {
          if (measuring) unanswered += 1;
        },
      );
    };
    /** Heartbeats from now on, the first one jittered over one interval (a fleet's beats spread out). */
    const startBeating = (s: Socket) => {
      timers.push(setTimeout(() => {
        beat(s);
        timers.push(setInterval(() => beat(s), intervalMs));
      }, Math.random() * intervalMs));
    };
    /**
     * Connects (and says hello) up to `upTo` sockets in all. Each starts heartbeating as soon as
     * its own hello is answered, as a worker does: one that waited for the whole batch would be
     * silent — and rightly declared lost — for as long as the batch takes.
     */
    const connectUpTo = async (upTo: number) => {
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: CONNECT_CONCURRENCY }, async () => {
          while (next < upTo) {
            const i = next++;
            const s = await connect(p.url, p.tokens ? '/worker' : '/', p.tokens?.[i]);
            s.on('disconnect', () => (disconnects += 1));
            sockets.push(s);
            if (p.tokens) {
              const hello = await emitAck<{ heartbeatIntervalMs: number; workerId: string }>(s, 'worker:hello', { capacity: 1, runs: [], version: 'bench' });
              if (!hello.ok) throw new Error(`worker:hello: ${hello.error.message}`);
              intervalMs = hello.data.heartbeatIntervalMs;
              helloAt[hello.data.workerId] = Date.now();
            }
            startBeating(s);
          }
        }),
      );
      connectMs += performance.now() - t0;
    };
    /**
     * The runner's next word after 'mute' (beats go on, their acks are not counted: the runner
     * is forcing a garbage collection in the server, a pause of its own making) and 'unmute'.
     */
    const runnerSays = async () => {
      for (;;) {
        const m = await ctx.message();
        if (m === 'mute' || m === 'unmute') measuring = m === 'unmute';
        else return;
      }
    };
    // Two phases (half, then all) so the runner can compare two steady states of the server.
    await connectUpTo(Math.floor(p.sockets / 2));
    ctx.event({ connected: sockets.length, intervalMs });
    await runnerSays();
    await connectUpTo(p.sockets);
    ctx.event({ connected: sockets.length, intervalMs });
    await runnerSays();
    measuring = false;
    return { connected: sockets.length, connectMs, acks, unanswered, disconnects, helloAt };
  } finally {
    for (const t of timers) clearTimeout(t);
    for (const s of sockets) s.close();
  }
});
