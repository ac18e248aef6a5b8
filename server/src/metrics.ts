import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/**
 * The hub's Prometheus registry, one per process (a hub node is a process in production).
 * Services import the instruments they feed; this module imports nothing of the hub, so it
 * can never be part of an import cycle. Gauges that describe the database (runs, sessions,
 * workers) are not tracked per event: `setGauges` fills them on scrape, one grouped query each.
 */
export const registry = new Registry();

const latency = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const fast = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export const metrics = {
  controlPush: new Histogram({
    name: 'handoff_control_push_seconds',
    help: 'REST control command to the worker reporting it applied (control:applied), seconds, by effective state',
    labelNames: ['effective'] as const,
    buckets: latency,
    registers: [registry],
  }),
  termInputAck: new Histogram({
    name: 'handoff_term_input_ack_seconds',
    help: 'Keystroke batch from a dashboard until the worker acked it into tmux (a proxy for keystroke to echo), seconds',
    buckets: fast,
    registers: [registry],
  }),
  frameFanoutLag: new Histogram({
    name: 'handoff_frame_fanout_lag_seconds',
    help: 'How late a terminal frame is broadcast to viewers relative to the fastest frame of its run (worker batching, network, hub queueing), seconds',
    buckets: fast,
    registers: [registry],
  }),
  recordingFlush: new Histogram({
    name: 'handoff_recording_flush_seconds',
    help: 'One batched recording insert (terminal frames to PostgreSQL), seconds',
    buckets: fast,
    registers: [registry],
  }),
  auditAppend: new Histogram({
    name: 'handoff_audit_append_seconds',
    help: 'One audit row append (chain lock, previous hash, insert) inside its transaction, seconds',
    buckets: fast,
    registers: [registry],
  }),
  httpDuration: new Histogram({
    name: 'handoff_http_request_duration_seconds',
    help: 'REST request duration by method, route pattern (never the raw path) and status',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: latency,
    registers: [registry],
  }),
  pendingFrames: new Gauge({
    name: 'handoff_recording_pending_frames',
    help: 'Terminal frames received (and broadcast) but not yet written to the recording',
    registers: [registry],
  }),
  rateLimited: new Counter({
    name: 'handoff_rate_limited_total',
    help: 'Requests and socket events refused with RATE_LIMITED, by edge (rest, socket)',
    labelNames: ['edge'] as const,
    registers: [registry],
  }),
  policyRefusals: new Counter({
    name: 'handoff_policy_refusals_total',
    help: 'Commands the policy gate did not allow outright, by action and outcome (denied, approval_required)',
    labelNames: ['action', 'outcome'] as const,
    registers: [registry],
  }),
  sockets: new Gauge({ name: 'handoff_sockets', help: 'Connected sockets on this node, by namespace', labelNames: ['namespace'] as const, registers: [registry] }),
  runs: new Gauge({ name: 'handoff_runs', help: 'Runs by status (cluster-wide, from the database)', labelNames: ['status'] as const, registers: [registry] }),
  workersConnected: new Gauge({ name: 'handoff_workers_connected', help: 'Workers connected to any node (cluster-wide, from the database)', registers: [registry] }),
  liveSessions: new Gauge({
    name: 'handoff_live_sessions',
    help: 'Live sessions by provider and status (cluster-wide, from the database)',
    labelNames: ['provider', 'status'] as const,
    registers: [registry],
  }),
  sweeperLeader: new Gauge({ name: 'handoff_sweeper_leader', help: '1 while this node holds the sweeper lease', registers: [registry] }),
  sweeperLastLeadAge: new Gauge({
    name: 'handoff_sweeper_lead_age_seconds',
    help: 'Seconds since this node last confirmed it leads the sweeper (lag of sweeping when it is the leader); -1 if never',
    registers: [registry],
  }),
};

/** Seconds since `start` (a `performance.now()` reading). */
export function secondsSince(start: number): number {
  return (performance.now() - start) / 1000;
}

/**
 * Frame fan-out lag estimator: a frame's `t` is ms since its run started on the worker's
 * clock. The earliest (broadcast time − t) seen for a run is its best-case pace; each
 * frame's lag is how far behind that it is broadcast. Needs no clock agreement between
 * hosts. Bounded: the oldest runs are forgotten first.
 */
const paceOf = new Map<string, number>();
const MAX_TRACKED_RUNS = 10_000;
export function observeFanout(runId: string, frames: readonly { t: number }[]): void {
  const now = Date.now();
  for (const f of frames) {
    const origin = now - f.t;
    const best = paceOf.get(runId);
    if (best === undefined || origin < best) {
      if (best === undefined && paceOf.size >= MAX_TRACKED_RUNS) paceOf.delete(paceOf.keys().next().value!);
      paceOf.set(runId, origin);
    }
    metrics.frameFanoutLag.observe(Math.max(0, origin - paceOf.get(runId)!) / 1000);
  }
}

/** Scrape-time state of one hub node (the database answers the cluster-wide ones). */
export interface GaugeSources {
  socketsByNamespace(): Record<string, number>;
  runsByStatus(): Promise<Array<{ status: string; n: number }>>;
  sessionsByProviderStatus(): Promise<Array<{ provider: string; status: string; n: number }>>;
  connectedWorkers(): Promise<number>;
  leader(): { leading: boolean; lastLeadAt: number | null };
}

/** Fills the gauges from their sources, then renders the registry in the text format. */
export async function scrape(sources: GaugeSources): Promise<string> {
  metrics.sockets.reset();
  for (const [namespace, n] of Object.entries(sources.socketsByNamespace())) metrics.sockets.set({ namespace }, n);
  const [runs, sessions, workers] = await Promise.all([sources.runsByStatus(), sources.sessionsByProviderStatus(), sources.connectedWorkers()]);
  metrics.runs.reset();
  for (const r of runs) metrics.runs.set({ status: r.status }, Number(r.n));
  metrics.liveSessions.reset();
  for (const s of sessions) metrics.liveSessions.set({ provider: s.provider, status: s.status }, Number(s.n));
  metrics.workersConnected.set(workers);
  const { leading, lastLeadAt } = sources.leader();
  metrics.sweeperLeader.set(leading ? 1 : 0);
  metrics.sweeperLastLeadAge.set(lastLeadAt === null ? -1 : (Date.now() - lastLeadAt) / 1000);
  return registry.metrics();
}
