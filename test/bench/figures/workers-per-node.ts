import { systemClock } from '@handoff/shared';
import { tmpdir } from 'node:os';
import pg from 'pg';
import { openDatabase } from '../../../server/src/infra/db/orm.js';
import { AuthService } from '../../../server/src/auth/auth-service.js';
import { createTestDatabase } from '../../support/db.js';
import { startClient } from '../lib/child.js';
import { repeat, type BenchContext, type Figure } from '../lib/figure.js';
import { cpuMs, rssKiB, startHubProcess } from '../lib/hub-process.js';
import type { FigureResult, Stat } from '../lib/report.js';
import { median, percentile } from '../lib/stats.js';
import type { ScriptedWorkersParams, ScriptedWorkersResult } from '../clients/scripted-workers.js';

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Pass {
  /** KiB of server RSS per connected client. */
  rssPerClient: number;
  ackP99: number;
  /** Server CPU while holding, % of one core. */
  cpuPct: number;
  connected: number;
  connectMs: number;
  unanswered: number;
  disconnects: number;
  /**
   * Hub only: times the hub declared a connected, heartbeating worker lost (see
   * `lostWhileConnected`; each counts, even if the next beat brought the worker back), plus
   * workers still lost at the end.
   */
  lost: number;
}

/** RSS samples of `pid` every 200 ms for `ms`. */
async function rssSamples(pid: number, ms: number): Promise<number[]> {
  const out: number[] = [];
  for (const end = performance.now() + ms; performance.now() < end; await settle(200)) out.push(rssKiB(pid));
  return out;
}

/**
 * Holds `p` scripted clients on a server process, measuring its RSS and CPU. Memory per client
 * is the slope between two steady states — half the clients held, then all of them — each the
 * median of 2 s of RSS samples with heartbeats flowing; a single before/after difference is
 * dominated by what the garbage collector happens to return (start-up garbage, heap slack).
 */
async function hold(serverPid: number, p: ScriptedWorkersParams, holdMs: number, lostCount?: (helloAt: Record<string, number>) => Promise<number>): Promise<Pass> {
  const clients = startClient<ScriptedWorkersResult>('scripted-workers', p);
  try {
    const half = await Promise.race([clients.nextEvent<{ connected: number }>(), clients.result.then(() => ({ connected: 0 }))]);
    const rssHalf = median(await rssSamples(serverPid, 2000));
    clients.send('more');
    await Promise.race([clients.nextEvent(), clients.result]);
    const cpu0 = cpuMs(serverPid);
    await settle(holdMs - 2000);
    const rssAll = median(await rssSamples(serverPid, 2000));
    const cpuPct = ((cpuMs(serverPid) - cpu0) / holdMs) * 100;
    clients.send('stop');
    const r = await clients.result;
    const lost = lostCount ? await lostCount(r.helloAt) : 0;
    return { rssPerClient: (rssAll - rssHalf) / (r.connected - half.connected), ackP99: percentile(r.acks, 99), cpuPct, connected: r.connected, connectMs: r.connectMs, unanswered: r.unanswered, disconnects: r.disconnects, lost };
  } finally {
    await clients.kill();
  }
}

/**
 * Connected workers the hub declared lost: per worker that said hello, the sweeper's `worker
 * lost` lines beyond those its hello found (a hello that finds the worker lost logs `lost
 * worker came back`: that loss came before it, while the worker was still waiting for its turn
 * to connect — silent, as far as the hub knows — even when the sweeper's line about it is
 * written after the hello). A connected worker that heartbeats must never be declared lost,
 * not even for one sweep.
 */
function lostWhileConnected(hubOutput: string, helloAt: Record<string, number>): number {
  const losses = new Map<string, number>();
  for (const line of hubOutput.split('\n')) {
    const lost = line.includes('"worker lost: no heartbeat');
    const cameBack = line.includes('"lost worker came back');
    if (!lost && !cameBack) continue;
    const { workerId } = JSON.parse(line) as { workerId: string };
    if (helloAt[workerId] === undefined) continue;
    losses.set(workerId, (losses.get(workerId) ?? 0) + (lost ? 1 : -1));
  }
  let n = 0;
  for (const extra of losses.values()) n += Math.max(0, extra);
  return n;
}

async function hubPass(n: number, holdMs: number): Promise<Pass> {
  const db = await createTestDatabase();
  try {
    // Worker identities and tokens first, in the bench process (the hub process is then started on a migrated database).
    const orm = await openDatabase({ databaseUrl: db.url, dataDir: tmpdir() });
    const auth = new AuthService(orm, systemClock);
    const tokens = new Array<string>(n);
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      for (let i = next++; i < n; i = next++) tokens[i] = (await auth.issueWorkerToken(`bench-w-${i}`)).token;
    }));
    await orm.close();
    const hub = await startHubProcess({ databaseUrl: db.url });
    try {
      const lostCount = async (helloAt: Record<string, number>) => {
        const c = new pg.Client({ connectionString: db.url });
        await c.connect();
        let lostAtEnd: number;
        try {
          lostAtEnd = Number((await c.query(`select count(*) as n from workers where status = 'lost'`)).rows[0].n);
        } finally {
          await c.end();
        }
        return lostAtEnd + lostWhileConnected(hub.output(), helloAt);
      };
      return await hold(hub.proc.pid!, { url: hub.url, tokens, sockets: n, intervalMs: 0 }, holdMs, lostCount);
    } finally {
      await hub.stop();
    }
  } finally {
    await db.drop();
  }
}

async function barePass(n: number, holdMs: number, intervalMs: number): Promise<Pass> {
  const server = startClient<{ held: number }>('bare-holder', {});
  try {
    const { url } = await Promise.race([server.nextEvent<{ url: string }>(), server.result.then(() => ({ url: '' }))]);
    const pass = await hold(server.proc.pid!, { url, tokens: null, sockets: n, intervalMs }, holdMs);
    server.send('stop');
    await server.result;
    return pass;
  } finally {
    await server.kill();
  }
}

/**
 * Workers per node: N scripted workers (socket.io clients on /worker with worker tokens: hello,
 * then heartbeats at the hub's default interval) on a hub process of its own — hub RSS per
 * worker, heartbeat ack p99, CPU, none wrongly lost — beside a bare socket.io server process
 * holding as many clients pinging at the same interval.
 */
export const workersPerNode: Figure = {
  name: 'workers-per-node',
  async run(ctx: BenchContext): Promise<FigureResult> {
    // BENCH_WORKERS=5000 (comma-separated sizes) measures chosen sizes only, e.g. the heavy one once: `BENCH_WORKERS=5000 pnpm bench --quick workers-per-node`.
    const chosen = (process.env.BENCH_WORKERS ?? '').split(',').map(Number).filter((n) => Number.isInteger(n) && n > 1);
    const sizes = chosen.length ? chosen : ctx.quick ? [200] : [500, 1000, 2000, 5000];
    // Longer than WORKER_LOST_AFTER (9 s by default) from 2,000 up, and in full runs: a busy hub must not declare live workers lost.
    const holdFor = (n: number) => (ctx.quick && n < 2000 ? 6000 : 20_000);
    // The floor only needs its RSS and a few pings per client.
    const bareHoldFor = (n: number) => (ctx.quick ? 3000 : holdFor(n));
    const intervalMs = 3000; // HEARTBEAT_INTERVAL's default, which the hub's hello answer carries
    const results = await repeat(ctx, 'workers-per-node', async () => {
      const out: Array<{ n: number; hub: Pass; bare: Pass }> = [];
      for (const n of sizes) out.push({ n, hub: await hubPass(n, holdFor(n)), bare: await barePass(n, bareHoldFor(n), intervalMs) });
      return out;
    });
    const stats: Stat[] = [];
    const notes: string[] = [];
    sizes.forEach((n, i) => {
      const at = results.map((r) => r[i]!);
      stats.push(
        { label: `RSS per worker, ${n}`, unit: 'KiB', handoff: at.map((r) => r.hub.rssPerClient), floor: at.map((r) => r.bare.rssPerClient), goal: { text: '≤ 30 KB', met: (h) => h > 0 && h * 1.024 <= 30 } },
        { label: `heartbeat ack p99, ${n}`, unit: 'ms', handoff: at.map((r) => r.hub.ackP99), floor: at.map((r) => r.bare.ackP99), goal: { text: '≤ 50 ms', met: (h) => h <= 50 } },
        { label: `hub CPU while holding, ${n}`, unit: '% core', handoff: at.map((r) => r.hub.cpuPct), floor: at.map((r) => r.bare.cpuPct) },
        { label: `wrongly lost + unanswered, ${n}`, unit: 'workers/beats', handoff: at.map((r) => r.hub.lost + r.hub.unanswered), floor: at.map((r) => r.bare.unanswered), goal: { text: 'none lost, every heartbeat answered', met: (h) => h === 0 } },
      );
      notes.push(
        `${n} workers, per repeat — connected ${at.map((r) => `${r.hub.connected}/${n} in ${(r.hub.connectMs / 1000).toFixed(1)} s`).join(', ')}; marked lost while connected ${at.map((r) => r.hub.lost).join(', ')}; heartbeats unanswered ${at.map((r) => r.hub.unanswered).join(', ')}; disconnects ${at.map((r) => r.hub.disconnects).join(', ')}. Floor connected ${at.map((r) => r.bare.connected).join(', ')}.`,
      );
    });
    for (const note of notes) ctx.log(note);
    notes.unshift(
      `The hub runs as its own process (\`node --import tsx server/src/main.ts\`, PostgreSQL, default heartbeat interval 3 s); the scripted workers run in one client process, 20 handshakes at a time, each heartbeating from its own hello on, the first beat jittered over one interval. RSS per worker = the slope between two steady states: (median hub RSS over 2 s with all workers, at the end of a ${sizes.map((n) => holdFor(n) / 1000).join(' / ')} s hold − the same with half of them) / the other half (a value ≤ 0 is noise and never counts as the goal met); CPU = the hub's user+system time over the hold. The bare floor holds its clients ${sizes.map((n) => bareHoldFor(n) / 1000).join(' / ')} s. At a few hundred clients the slope is still close to the heap's own noise: read it from 500 up (full run: 500 / 1,000 / 2,000 / 5,000). The hub batches heartbeat writes (HEARTBEAT_FLUSH 1 s) and lets 8 hellos in at a time (HELLO_CONCURRENCY).`,
    );
    return {
      name: 'workers-per-node',
      title: 'scripted workers heartbeating on one hub node',
      floor: 'a bare socket.io server process holding the same number of clients, each pinging (ack) at the same interval',
      repeats: ctx.repeats,
      stats,
      notes,
    };
  },
};
