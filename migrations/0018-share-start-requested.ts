// A share's worker is given `LIVE_PROVIDER_START_TIMEOUT` (+ a margin) to report it ready
// before the sweeper fails it as stuck. That clock starts when the hub asks a worker to start
// it — not when the row was created: a share asked for on a queued run waits for a worker,
// and a run created with `liveSession: false` keeps its DISABLED row from the run's creation
// until someone enables a share on it. Rows still STARTING keep the old rule (their creation).
export const name = '0018-share-start-requested';

export const up: string[] = [
  `alter table live_sessions add column start_requested_at timestamptz`,
  `update live_sessions set start_requested_at = created_at where status = 'STARTING' and provider <> 'web'`,
];
