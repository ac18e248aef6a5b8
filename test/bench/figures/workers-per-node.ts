import { systemClock } from '@handoff/shared';
import { tmpdir } from 'node:os';
import pg from 'pg';
import { openDatabase } from '../../../server/src/infra/db/orm.js';
import { AuthService } from '../../../server/src/auth/auth-service.js';
import { createTestDatabase } from '../../support/db.js';
import { startClient } from '../lib/child.js';
import { repeat, type BenchContext, type Figure } from '../lib/figure.js';
import { collectGarbage, cpuMs, freePort, rssKiB, startHubProcess } from '../lib/hub-process.js';
import type { FigureResult, Stat } from '../lib/report.js';
import { median, percentile } from '../lib/stats.js';
import type { ScriptedWorkersParams, ScriptedWorkersResult } from '../clients/scripted-workers.js';

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Pass {
  /** KiB of server RSS per connected client, each steady state measured right after a full garbage collection. */
  rssPerClient: number;
  /** The same, sampled as the server runs: includes garbage its collector has not come to yet. */
  rssPerClientSampled: number;
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

/** The server process under measure, and how to make it collect its garbage (its inspector). */
interface Server {
  pid: number;
  inspectPort: number;
}

/**
 * Holds `p` scripted clients on a server process, measuring its RSS and CPU. Memory per client
 * is the slope between two steady states — half the clients held, then all of them. Each is
 * measured twice: the median of 2 s of RSS samples as heartbeats flow, then the median of 1 s
 * of samples right after a full garbage collection (through the inspector). The sampled slope
 * mostly says where the collector happened to be: a hub that connected 2,500 workers carries
 * tens of MB of their handshakes' garbage until its next full collection, which may come
 * before either measurement or between them (measured: 197 MB before one, 105 MB after).
 */
async function hold(server: Server, p: ScriptedWorkersParams, holdMs: number, lostCount?: (helloAt: Record<string, number>) => Promise<number>): Promise<Pass> {
  const clients = startClient<ScriptedWorkersResult>('scripted-workers', p);
  /** RSS right after a full collection; heartbeat acks meanwhile are not counted (the pause is the runner's doing), and all are back before counting resumes. */
  const collected = async () => {
    clients.send('mute');
    await collectGarbage(server.inspectPort);
    await settle(500);
    const rss = median(await rssSamples(server.pid, 1000));
    clients.send('unmute');
    return rss;
  };
  try {
    const half = await Promise.race([clients.nextEvent<{ connected: number }>(), clients.result.then(() => ({ connected: 0 }))]);
    const rssHalf = median(await rssSamples(server.pid, 2000));
    const rssHalfCollected = await collected();
    clients.send('more');
    await Promise.race([clients.nextEvent(), clients.result]);
    const cpu0 = cpuMs(server.pid);
    const t0 = performance.now();
    await settle(holdMs - 2000);
    const rssAll = median(await rssSamples(server.pid, 2000));
    const cpuPct = ((cpuMs(server.pid) - cpu0) / (performance.now() - t0)) * 100;
    const rssAllCollected = await collected();
    clients.send('stop');
    const r = await clients.result;
    const lost = lostCount ? await lostCount(r.helloAt) : 0;
    const added = r.connected - half.connected;
    return {
      rssPerClient: (rssAllCollected - rssHalfCollected) / added,
      rssPerClientSampled: (rssAll - rssHalf) / added,
      ackP99: percentile(r.acks, 99),
      cpuPct,
      connected: r.connected,
      connectMs: r.connectMs,
      unanswered: r.unanswered,
      disconnects: r.disconnects,
      lost,
    };
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
    const inspectPort = await freePort();
    const hub = await startHubProcess({ databaseUrl: db.url, inspectPort });
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
      return await hold({ pid: hub.proc.pid!, inspectPort }, { url: hub.url, tokens, sockets: n, intervalMs: 0 }, holdMs, lostCount);
    } finally {
      await hub.stop();
    }
  } finally {
    await db.drop();
  }
}

async function barePass(n: number, holdMs: number, intervalMs: number): Promise<Pass> {
  const inspectPort = await freePort();
  const server = startClient<{ held: number }>('bare-holder', {}, [`--inspect=127.0.0.1:${inspectPort}`]);
  try {
    const { url } = await Promise.race([server.nextEvent<{ url: string }>(), server.result.then(() => ({ url: '' }))]);
    const pass = await hold({ pid: server.proc.pid!, inspectPort }, { url, tokens: null, sockets: n, intervalMs }, holdMs);
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
        { label: `RSS per worker sampled (garbage included), ${n}`, unit: 'KiB', handoff: at.map((r) => r.hub.rssPerClientSampled), floor: at.map((r) => r.bare.rssPerClientSampled) },
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
      `The hub runs as its own process (\`node --import tsx server/src/main.ts\`, PostgreSQL, default heartbeat interval 3 s); the scripted workers run in one client process, 20 handshakes at a time, each heartbeating from its own hello on, the first beat jittered over one interval. RSS per worker = the slope between two steady states: (hub RSS with all workers, at the end of a ${sizes.map((n) => holdFor(n) / 1000).join(' / ')} s hold − the same with half of them) / the other half (a value ≤ 0 is noise and never counts as the goal met), each state's RSS the median of 1 s of samples right after a full garbage collection (\`HeapProfiler.collectGarbage\` through the process's inspector, floor alike); the sampled line is the same slope from the median of the 2 s before that collection, as the process ran — it includes whatever garbage the collector had not come to yet (a hub that just connected thousands of workers carries their handshakes' garbage until its next full collection) and swings with where the collector happened to be; CPU = the hub's user+system time over the hold. The bare floor holds its clients ${sizes.map((n) => bareHoldFor(n) / 1000).join(' / ')} s. At a few hundred clients the slope is still close to the heap's own noise: read it from 500 up (full run: 500 / 1,000 / 2,000 / 5,000). The hub batches heartbeat writes (HEARTBEAT_FLUSH 1 s) and lets 8 hellos in at a time (HELLO_CONCURRENCY).`,
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
