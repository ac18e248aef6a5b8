import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { api } from '../../support/clients.js';
import { startBareServer, type BareServer } from '../lib/bare.js';
import { startClient } from '../lib/child.js';
import { repeat, type BenchContext, type Figure } from '../lib/figure.js';
import { cpuByGroup, cpuSnapshot, machineBusyMs } from '../lib/cpu.js';
import type { BenchCluster } from '../lib/hubs.js';
import type { FigureResult } from '../lib/report.js';
import { median, percentile } from '../lib/stats.js';
import type { ObserversParams, ObserversResult } from '../clients/observers.js';

/** Observer sockets per client process (the observers never share the hub's event loop). */
const PER_PROCESS = 250;
const LINE_INTERVAL_MS = 50;
/** CPU groups of Handoff's pass that any terminal relay built on tmux pays (see `fmtFloorBound`). */
const TMUX = 'tmux (and its pipe-pane cat)';
const RUN = 'the run (its shell, cat)';
const BARE = 'bare server';

/**
 * The throughput payload: `bytes` of base64 in 100-column lines (random, so nothing on the
 * way compresses it), then `BULK-END`. Made before the timed window, for Handoff's run and
 * for the floor alike: what is measured is carrying the bytes, not making them.
 */
const payloadLines = (bytes: number) => [...(randomBytes(bytes * 0.75).toString('base64').match(/.{1,100}/g) ?? []), 'BULK-END'];

interface Observers {
  pids: number[];
  /** Their results, once every one is done (they keep running: the caller profiles, then kills them). */
  collect(): Promise<ObserversResult>;
  kill(): Promise<void>;
}

/** Starts `total` observers split over client processes; resolves once every one is subscribed. */
async function observers(p: Omit<ObserversParams, 'sockets'> & { total: number }): Promise<Observers> {
  const procs = Math.ceil(p.total / PER_PROCESS);
  const clients = Array.from({ length: procs }, (_, i) => {
    const sockets = Math.floor(p.total / procs) + (i < p.total % procs ? 1 : 0);
    return startClient<ObserversResult>('observers', { ...p, sockets } satisfies ObserversParams);
  });
  try {
    await Promise.all(clients.map((c) => Promise.race([c.nextEvent(), c.result])));
  } catch (err) {
    await Promise.all(clients.map((c) => c.kill()));
    throw err;
  }
  return {
    pids: clients.map((c) => c.proc.pid!),
    async collect() {
      const rs = await Promise.all(clients.map((c) => c.result));
      return { values: rs.flatMap((r) => r.values), incomplete: rs.reduce((n, r) => n + r.incomplete, 0) };
    },
    kill: () => Promise.all(clients.map((c) => c.kill())).then(() => undefined),
  };
}

/** A pass's result, with where its CPU went (ms per group of processes) while the observers received. */
type Pass = ObserversResult & { cpu: Map<string, number>; bytes: number };

/**
 * Runs `pass` between two CPU snapshots: the ms each group of processes used (`cpuByGroup`), and
 * what the machine used beyond them (`other`: what the groups do not name, the kernel's share included).
 */
async function profiled(bytes: number, pass: () => Promise<ObserversResult>, group: Parameters<typeof cpuByGroup>[2]): Promise<Pass> {
  const before = cpuSnapshot();
  const busy0 = machineBusyMs();
  const result = await pass();
  const cpu = cpuByGroup(before, cpuSnapshot(), group);
  const named = [...cpu.values()].reduce((a, b) => a + b, 0);
  cpu.set('other', Math.max(0, machineBusyMs() - busy0 - named));
  return { ...result, cpu, bytes };
}

/** A run that waits for an operator message (its inbox), then runs `body`. */
const waitForGo = (body: string) => `while [ ! -s "$HANDOFF_INBOX" ]; do sleep 0.05; done; ${body}; sleep 2`;

async function handoffPass(cluster: BenchCluster, mode: ObserversParams['mode'], total: number, lines: number, bytes: number): Promise<Pass> {
  const hub = cluster.nodes[0]!;
  // The run prints the payload with `cat` (the pane's tty turns each \n into \r\n: the floor's bytes).
  const dir = mkdtempSync(path.join(tmpdir(), 'handoff-bench-fanout-'));
  const payload = path.join(dir, 'payload.txt');
  if (mode === 'throughput') writeFileSync(payload, `${payloadLines(bytes).join('\n')}\n`);
  const body = mode === 'latency'
    ? `for i in $(seq 1 ${lines}); do echo "ts $(date +%s%N) $i"; sleep ${LINE_INTERVAL_MS / 1000}; done`
    : `echo "BULK-START $(date +%s%N)"; cat '${payload}'`;
  let runId: string | undefined;
  let obs: Observers | undefined;
  try {
    runId = await cluster.startRun(waitForGo(body));
    obs = await observers({ url: hub.url, token: cluster.operator, runId, total, mode, lines });
    const { pids, collect } = obs;
    const workerPid = cluster.worker.proc.pid;
    return await profiled(bytes, async () => {
      const go = await api(hub.url, cluster.operator, 'POST', `/api/task-runs/${runId}/operator-messages`, { message: 'go' });
      if (go.status !== 201) throw new Error(`operator message answered ${go.status}`);
      return collect();
    }, (pid, comm, ancestors) => {
      if (pid === process.pid) return 'hub';
      if (pid === workerPid) return 'worker';
      if (pids.includes(pid)) return 'observers';
      if (comm === 'postgres') return 'PostgreSQL';
      if (comm.startsWith('tmux') || (comm === 'cat' && ancestors[0]?.startsWith('tmux'))) return TMUX;
      if (ancestors.some((a) => a.startsWith('tmux'))) return RUN;
      return null;
    });
  } finally {
    await obs?.kill();
    if (runId) await cluster.cancel(runId);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function barePass(bare: BareServer, mode: ObserversParams['mode'], total: number, lines: number, bytes: number): Promise<Pass> {
  const runId = `bare-${randomBytes(4).toString('hex')}`;
  const obs = await observers({ url: bare.url, token: null, runId, total, mode, lines });
  const room = bare.io.to(runId);
  let seq = 0;
  const emit = (data: string) => room.emit('term:frame', { runId, frames: [{ seq: ++seq, t: 0, data }] });
  const body = mode === 'throughput' ? `${payloadLines(bytes).join('\r\n')}\r\n` : '';
  const send = async () => {
    if (mode === 'latency') {
      for (let i = 1; i <= lines; i++) {
        emit(`ts ${Math.round((performance.timeOrigin + performance.now()) * 1e6)} ${i}\r\n`);
        await new Promise((r) => setTimeout(r, LINE_INTERVAL_MS));
      }
    } else {
      const text = `BULK-START ${Math.round((performance.timeOrigin + performance.now()) * 1e6)}\r\n${body}`;
      for (let at = 0; at < text.length; at += 32 * 1024) {
        emit(text.slice(at, at + 32 * 1024));
        await new Promise((r) => setImmediate(r));
      }
    }
    return obs.collect();
  };
  try {
    return await profiled(bytes, send, (pid) => (pid === process.pid ? BARE : obs.pids.includes(pid) ? 'observers' : null));
  } finally {
    await obs.kill();
  }
}

const cores = availableParallelism();
const totalCpu = (p: Pass) => [...p.cpu.values()].reduce((a, b) => a + b, 0);
const mib = (p: Pass) => p.bytes / 2 ** 20;
/** CPU of every process per MiB the run printed (each observer received all of it). */
const cpuPerMiB = (p: Pass) => totalCpu(p) / mib(p);
/** One group's CPU per MiB the run printed. */
const perMiB = (p: Pass, group: string) => (p.cpu.get(group) ?? 0) / mib(p);
/** Per repeat, the throughput measured (median observer) and the one its CPU per MiB allows on the machine's cores: "9.9 of 10.4". */
const fmtBounds = (ps: Pass[]) => ps.map((p) => `${median(p.values).toFixed(1)} of ${((cores * 1000) / cpuPerMiB(p)).toFixed(1)}`).join(', ');
/**
 * Per repeat, what Handoff could reach if its worker and PostgreSQL cost nothing and its hub only
 * what the floor's bare server does (the same broadcast to the same observers): what must run
 * whatever Handoff does (tmux with the run printing, that broadcast, and observers as cheap as
 * the floor's) on the machine's cores, as a share of the floor measured: "0.81× (20.1 MiB/s)".
 */
const fmtFloorBound = (rs: { throughput: Pass; throughputFloor: Pass }[]) =>
  rs.map(({ throughput, throughputFloor }) => {
    const inherent = perMiB(throughput, TMUX) + perMiB(throughput, RUN) + perMiB(throughputFloor, 'observers') + perMiB(throughputFloor, BARE);
    const allowed = (cores * 1000) / inherent;
    return `${(allowed / median(throughputFloor.values)).toFixed(2)}× (${allowed.toFixed(1)} MiB/s)`;
  }).join(', ');
/** "hub 27 ms, worker 20 ms, …": each group's median ms per MiB, largest first. */
function cpuShares(ps: Pass[]): string {
  const groups = [...new Set(ps.flatMap((p) => [...p.cpu.keys()]))];
  const per = groups.map((g) => [g, median(ps.map((p) => perMiB(p, g)))] as const).sort((a, b) => b[1] - a[1]);
  return per.map(([g, ms]) => `${g} ${ms.toFixed(1)}`).join(', ');
}

/**
 * One run → many observers: print → observer latency with N dashboards (timestamps printed by
 * the run itself), and throughput per observer with 10 — beside a bare socket.io broadcast of
 * the same payloads to the same number of clients.
 */
export const fanOut: Figure = {
  name: 'fan-out',
  async run(ctx: BenchContext): Promise<FigureResult> {
    const n = ctx.quick ? 100 : 1000;
    const lines = ctx.quick ? 30 : 100;
    const bytes = ctx.quick ? 4 * 2 ** 20 : 8 * 2 ** 20;
    const cluster = await ctx.cluster(1);
    const bare = await startBareServer();
    try {
      const results = await repeat(ctx, 'fan-out', async () => {
        const r = {
          latency: await handoffPass(cluster, 'latency', n, lines, 0),
          latencyFloor: await barePass(bare, 'latency', n, lines, 0),
          throughput: await handoffPass(cluster, 'throughput', 10, 0, bytes),
          throughputFloor: await barePass(bare, 'throughput', 10, 0, bytes),
        };
        ctx.log(`throughput ${median(r.throughput.values).toFixed(1)} MiB/s, CPU ms per MiB: ${cpuShares([r.throughput])}; floor ${median(r.throughputFloor.values).toFixed(1)} MiB/s, ${cpuShares([r.throughputFloor])}`);
        return r;
      });
      const incomplete = results.map((r) => `${r.latency.incomplete}/${r.latencyFloor.incomplete}/${r.throughput.incomplete}/${r.throughputFloor.incomplete}`);
      return {
        name: 'fan-out',
        title: `1 run → ${n.toLocaleString('en-US')} observers (print → observer), and → 10 observers (throughput)`,
        floor: 'a bare socket.io server broadcasting the same payloads (`term:frame` batches: the same timestamped lines at the same pace; the same bytes in 32 KiB frames) to a room of the same number of clients, in the same client processes',
        repeats: ctx.repeats,
        stats: [
          { label: `p50, ${n} observers`, unit: 'ms', handoff: results.map((r) => median(r.latency.values)), floor: results.map((r) => median(r.latencyFloor.values)) },
          {
            label: `p99, ${n} observers`, unit: 'ms', handoff: results.map((r) => percentile(r.latency.values, 99)), floor: results.map((r) => percentile(r.latencyFloor.values, 99)),
            goal: { text: 'p99 ≤ 100 ms and ≤ 1.5× floor', met: (h, f) => f !== null && h <= 100 && h <= 1.5 * f },
          },
          {
            label: 'throughput per observer, 10 observers (median observer)', unit: 'MiB/s', handoff: results.map((r) => median(r.throughput.values)), floor: results.map((r) => median(r.throughputFloor.values)),
            goal: { text: '≥ 90 % of floor', met: (h, f) => f !== null && h >= 0.9 * f },
          },
          { label: 'CPU per MiB to each of 10 observers, every process', unit: 'ms', handoff: results.map((r) => cpuPerMiB(r.throughput)), floor: results.map((r) => cpuPerMiB(r.throughputFloor)) },
        ],
        notes: [
          `Latency: the run prints ${lines} lines \`ts <date +%s%N> <i>\`, one every ${LINE_INTERVAL_MS} ms, once all ${n} observers (${Math.ceil(n / PER_PROCESS)} client process(es), ${PER_PROCESS} sockets at most each) have subscribed; each observer computes receipt − printed time for every line (the batching window of the worker included).`,
          `Throughput: the run prints ${(bytes / 2 ** 20).toFixed(0)} MiB of base64 (100-column lines, random, made before the timed window as the floor's are) as fast as it can (\`cat\` of a file); each of 10 observers divides the bytes it received by the time from the sender's \`BULK-START <ns>\` stamp to the frame with \`BULK-END\`. An observer the hub's lag guard skipped (its socket's queue past the bound) resyncs the gap on \`term:resume\` as the dashboard does; the resynced bytes count, and so does the time they took.`,
          `Where the throughput passes' CPU went, ms per MiB (median of repeats; /proc, whole passes): Handoff ${cpuShares(results.map((r) => r.throughput))}; floor ${cpuShares(results.map((r) => r.throughputFloor))}. At ${cores} cores, that CPU per MiB allows at most this throughput per observer even with every process overlapped perfectly — measured of allowed, MiB/s, per repeat: Handoff ${fmtBounds(results.map((r) => r.throughput))}; floor ${fmtBounds(results.map((r) => r.throughputFloor))}. A pass's CPU includes its start and its end, so the bound is a little under what the steady state allows. Even if the worker and PostgreSQL cost nothing and the hub only what the bare server does (the same broadcast), tmux carrying the run's output and the run printing it (Handoff's pass) plus that broadcast and observers as cheap as the floor's would allow at most, per repeat: ${fmtFloorBound(results)} of the floor measured.`,
          `Observers that did not see everything within 120 s (latency Handoff/floor, throughput Handoff/floor), per repeat: ${incomplete.join('; ')}.`,
        ],
      };
    } finally {
      await bare.close();
    }
  },
};
