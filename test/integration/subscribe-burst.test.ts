import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Frame } from '@handoff/shared';
import { api, connect, emitAck, joinFrames } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { lineNumbers, ScriptedWorker } from '../support/scripted-worker.js';

const N = 300;

/**
 * A burst of N `term:subscribe` on a streaming run (issue 10 item 5): every subscriber's
 * scrollback + live frames are gapless and duplicate-free, the database is read O(1) times per
 * run (counted at the pg client: scrollback reads and the watch check), and a viewer already
 * watching keeps getting live frames on time while the burst is served.
 */
describe('term:subscribe burst on a streaming run', () => {
  let hub: TestHub;
  let operator: string;
  let worker: ScriptedWorker;
  const sockets: Socket[] = [];
  const statements: string[] = [];
  let restoreQuery: () => void = () => {};

  beforeAll(async () => {
    const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      const text = typeof args[0] === 'string' ? args[0] : (args[0] as { text?: string })?.text;
      statements.push(String(text));
      return query.apply(this, args);
    } as typeof pg.Client.prototype.query;
    restoreQuery = () => (pg.Client.prototype.query = query as typeof pg.Client.prototype.query);
    hub = await startTestHub({ env: { RATE_LIMIT_IP_PER_SEC: '100000', RATE_LIMIT_REST_BURST: '5000', RATE_LIMIT_REST_PER_SEC: '5000' } });
    operator = await hub.token('operator');
  });
  afterAll(async () => {
    restoreQuery();
    for (const s of sockets) s.close();
    worker?.close();
    await hub?.stop();
  });

  /** Statements of the subscribe path: scrollback reads of recording_chunks, and the watch check's session read. */
  const scrollbackReads = () => statements.filter((s) => /from recording_chunks where run_id = \S+ (and seq > \S+ )?order by seq/.test(s)).length;
  const watchChecks = () => statements.filter((s) => /from "live_sessions" as "l0" where "l0"."run_id" = \S+ and "l0"."provider"/.test(s)).length;

  /** One dashboard: the scrollback its subscribe answered and the live frames it got after joining. */
  interface Sub {
    socket: Socket;
    live: Frame[];
    scrollback: Frame[] | null;
  }
  const dashboards = async (n: number, token: string): Promise<Sub[]> => {
    const subs = await Promise.all(Array.from({ length: n }, async () => {
      const socket = await connect(hub.url, '/dashboard', token);
      sockets.push(socket);
      const sub: Sub = { socket, live: [], scrollback: null };
      socket.on('term:frame', ({ frames }: { frames: Frame[] }) => sub.live.push(...frames));
      return sub;
    }));
    return subs;
  };
  /** Everything a subscriber can render: scrollback then live, each seq once (as the dashboard's sequencer keeps it). */
  const seen = (s: Sub) => [...new Map([...(s.scrollback ?? []), ...s.live].map((f) => [f.seq, f])).values()].sort((a, b) => a.seq - b.seq);

  it(`${N} subscribers at once: gapless text each, O(1) database reads, live frames to a watching viewer not held back`, async () => {
    const workerToken = await hub.workerToken(`burst-${randomBytes(3).toString('hex')}`);
    worker = await ScriptedWorker.connect(hub.url, workerToken);
    await worker.hello([], 2);
    const runId = (await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'sleep 600' } })).body.id as string;
    for (const deadline = Date.now() + 10_000; !worker.assigned.some((a) => a.runId === runId) && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
    expect((await worker.started(runId)).ok).toBe(true);

    // The worker prints one numbered line every 10 ms and sends what the hub has not acked, one
    // output in flight at a time (the hub takes only the next seq; a short ack means resend).
    let seq = 0;
    let acked = 0;
    let inFlight = false;
    const sentAt = new Map<number, number>();
    const pump = () => {
      if (inFlight || acked >= seq) return;
      inFlight = true;
      const frames: Frame[] = [];
      for (let s = acked + 1; s <= seq && frames.length < 1000; s++) {
        frames.push({ seq: s, t: s * 10, data: `line ${s}\r\n` });
        if (!sentAt.has(s)) sentAt.set(s, performance.now());
      }
      const w = worker;
      w.output(runId, frames)
        .then((ack) => { if (ack.ok && w === worker) acked = Math.max(acked, ack.data.lastSeq); })
        .catch(() => undefined) // a closed socket: the reconnect resends
        .finally(() => { if (w === worker) inFlight = false; pump(); });
    };
    const print = (count: number) => {
      seq += count;
      pump();
    };
    print(500); // history before anyone watches
    let streaming = true;
    const stream = async () => {
      while (streaming) {
        print(1);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    const streamer = stream();

    // A viewer already watching: when does each live frame reach it?
    const [watching] = await dashboards(1, await hub.token('observer'));
    const arrivedAt = new Map<number, number>();
    watching!.socket.on('term:frame', ({ frames }: { frames: Frame[] }) => { for (const f of frames) arrivedAt.set(f.seq, performance.now()); });
    const first = await emitAck<{ frames: Frame[] }>(watching!.socket, 'term:subscribe', { runId });
    expect(first.ok).toBe(true);
    watching!.scrollback = first.ok ? first.data.frames : null;

    const burst = async (label: string) => {
      const subs = await dashboards(N, await hub.token('observer'));
      const readsBefore = scrollbackReads();
      const checksBefore = watchChecks();
      const burstStart = performance.now();
      const seqAtStart = seq;
      const acks = await Promise.all(subs.map((s) => emitAck<{ frames: Frame[]; truncated: boolean }>(s.socket, 'term:subscribe', { runId })));
      const burstEnd = performance.now();
      const seqAtEnd = seq;
      for (const [i, ack] of acks.entries()) {
        if (!ack.ok) throw new Error(`subscriber ${i}: ${JSON.stringify(ack)}`);
        if (ack.ok) subs[i]!.scrollback = ack.data.frames;
      }
      const reads = scrollbackReads() - readsBefore;
      const checks = watchChecks() - checksBefore;
      // Let every subscriber receive the frames sent until now.
      const target = seq;
      for (const deadline = Date.now() + 15_000; subs.some((s) => (seen(s).at(-1)?.seq ?? 0) < target) && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 50));
      for (const s of subs) {
        const frames = seen(s).filter((f) => f.seq <= target);
        // Continuous text from the first line it got to the newest: no gap, no repeat.
        const numbers = lineNumbers(joinFrames(frames));
        expect(numbers.length).toBeGreaterThan(0);
        expect(numbers).toEqual(Array.from({ length: numbers.length }, (_, i) => numbers[0]! + i));
        expect(numbers.at(-1)).toBe(target);
        // The scrollback reaches back into the history (the run's recent tail).
        expect(numbers[0]).toBeLessThanOrEqual(seqAtStart);
      }
      // Live frames sent while the burst was answered reached the watching viewer on time.
      const delays = [...sentAt].filter(([s, t]) => s > seqAtStart && s <= seqAtEnd && t >= burstStart && t <= burstEnd).map(([s, t]) => (arrivedAt.get(s) ?? Infinity) - t);
      const worst = Math.max(...delays);
      console.log(`${label}: ${N} subscribes answered in ${(burstEnd - burstStart).toFixed(0)} ms; ${reads} scrollback read(s), ${checks} watch check(s); ${delays.length} live frames meanwhile, worst delay to the watching viewer ${worst.toFixed(0)} ms`);
      expect(delays.length).toBeGreaterThan(0);
      expect(worst).toBeLessThan(1000);
      for (const s of subs) s.socket.close();
      return { reads, checks };
    };

    // The stream is hot on this node (it ingests the run from seq 1): served from memory.
    const hot = await burst('hot stream');
    expect(hot.reads).toBe(0);
    expect(hot.checks).toBeLessThanOrEqual(4);

    // The worker comes back on a new socket: the stream restarts with an empty tail, so the
    // first subscribers need the database — once or twice for the whole burst, not per subscriber.
    streaming = false;
    await streamer;
    worker.close();
    worker = await ScriptedWorker.connect(hub.url, workerToken);
    const [verdict] = await worker.hello([runId], 2);
    expect(verdict).toMatchObject({ runId, keep: true });
    seq = verdict!.lastSeq; // the worker resends from what the hub recorded
    acked = verdict!.lastSeq;
    inFlight = false;
    streaming = true;
    const resumed = stream();
    // The reclaimed run gets a fresh web share (its old one went ERROR with the worker).
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 50))) {
      const live = await api(hub.url, operator, 'GET', `/api/task-runs/${runId}/live-session`);
      if (live.body?.session?.status === 'READY') break;
    }
    await new Promise((r) => setTimeout(r, 200));
    const cold = await burst('stream re-attached (empty tail)');
    expect(cold.reads).toBeGreaterThan(0);
    expect(cold.reads).toBeLessThanOrEqual(3);
    expect(cold.checks).toBeLessThanOrEqual(4);
    streaming = false;
    await resumed;
    await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
  }, 120_000);
});
