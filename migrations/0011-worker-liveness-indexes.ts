// What the heartbeat flush and the loss sweep query, kept proportional to what they touch
// with thousands of workers per node:
// - the flush refreshes the heartbeat time of each heard worker's active shares
//   (`where worker_id = any(…) and status in ('STARTING','READY')`): only active sessions are
//   indexed, so ended sessions (the bulk of history) never cost a heartbeat anything;
// - the sweeper's silent-worker scan (`status in ('online','offline') and last_heartbeat_at < …`)
//   reads the oldest heartbeats of live workers only, not every worker ever registered;
// - the scheduler's queue probe and claim take the oldest queued run: a partial index holds
//   just the queue, however many finished runs the table keeps.
export const name = '0011-worker-liveness-indexes';

export const up: string[] = [
  `create index live_sessions_worker_active_idx on live_sessions (worker_id) where status in ('STARTING','READY')`,
  `create index workers_heard_idx on workers (last_heartbeat_at) where status in ('online','offline')`,
  `create index runs_queue_idx on runs (created_at, id) where status = 'queued'`,
];
