import { randomBytes } from 'node:crypto';
import { api, emitAck, Viewer } from '../../support/clients.js';
import { createTestDatabase, REDIS_URL, type TestDatabase } from '../../support/db.js';
import { startTestHub, type TestHub } from '../../support/hub.js';
import { startWorker, type WorkerProcess } from '../../support/worker.js';

/**
 * Rate limits out of the way: the bench measures latency, not the limiter (1,000 observers
 * connecting from one address outrun the per-address budget). Everything else is the hub's
 * default configuration.
 */
export const BENCH_HUB_ENV: Record<string, string> = {
  RATE_LIMIT_IP_PER_SEC: '1000000',
  RATE_LIMIT_REST_PER_SEC: '100000',
  RATE_LIMIT_REST_BURST: '1000000',
  RATE_LIMIT_SOCKET_PER_SEC: '100000',
  RATE_LIMIT_SOCKET_BURST: '1000000',
};

/** One or two hub nodes (two: one database, Redis adapter), a real worker on the last node, an operator. */
export interface BenchCluster {
  nodes: TestHub[];
  worker: WorkerProcess;
  operator: string;
  /** A dashboard in the bench process, used only to wait for setup states (never to measure). */
  viewer: Viewer;
  /** Creates a run (REST on node 0) and waits until it is running; returns its id. */
  startRun(script: string): Promise<string>;
  /** Cancels a run a figure left running (the cluster is shared by the figures of a bench run). */
  cancel(runId: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startCluster(opts: { nodes: 1 | 2; capacity?: number; env?: Record<string, string> }): Promise<BenchCluster> {
  const db: TestDatabase | null = opts.nodes === 2 ? await createTestDatabase() : null;
  const env = { ...BENCH_HUB_ENV, REDIS_KEY_PREFIX: `handoff-bench-${randomBytes(4).toString('hex')}`, ...opts.env };
  const nodes: TestHub[] = [];
  try {
    if (db) for (let i = 0; i < 2; i++) nodes.push(await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env }));
    else nodes.push(await startTestHub({ env }));
  } catch (err) {
    for (const n of nodes) await n.stop();
    await db?.drop();
    throw err;
  }
  const first = nodes[0]!;
  const last = nodes[nodes.length - 1]!;
  const operator = await first.token('operator');
  const viewer = await Viewer.connect(first.url, operator);
  const worker = startWorker({ hubUrl: last.url, token: await last.workerToken(`bench-${randomBytes(3).toString('hex')}`), capacity: opts.capacity ?? 4 });
  return {
    nodes,
    worker,
    operator,
    viewer,
    async startRun(script) {
      const res = await api(first.url, operator, 'POST', '/api/task-runs', { command: { script } });
      if (res.status !== 201 && res.status !== 200) throw new Error(`POST /task-runs answered ${res.status}: ${JSON.stringify(res.body)}`);
      const runId = res.body.id as string;
      await emitAck(viewer.socket, 'run:subscribe', { runId });
      await viewer.untilStatus(runId, ['running']);
      return runId;
    },
    async cancel(runId) {
      await api(first.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
      await viewer.untilStatus(runId, ['cancelled', 'succeeded', 'failed', 'lost']);
    },
    async stop() {
      viewer.close();
      await worker.stop();
      for (const n of nodes) await n.stop();
      await db?.drop();
    },
  };
}

/**
 * The clusters of one bench run: started on first use and shared by the figures that need the
 * same shape (a hub node and its worker take seconds to start on a loaded machine), stopped at
 * the end. Figures leave no run behind them.
 */
export class ClusterPool {
  private readonly started = new Map<1 | 2, Promise<BenchCluster>>();

  get(nodes: 1 | 2): Promise<BenchCluster> {
    let c = this.started.get(nodes);
    if (!c) {
      c = startCluster({ nodes });
      this.started.set(nodes, c);
    }
    return c;
  }

  async stopAll(): Promise<void> {
    for (const c of this.started.values()) await (await c.catch(() => null))?.stop();
    this.started.clear();
  }
}
