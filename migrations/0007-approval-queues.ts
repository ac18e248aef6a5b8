// The sweeper asks every tick for approvals to expire and for approved requests whose
// command never ran (a crash between approve and execute): partial indexes keep both
// proportional to what is waiting, not to months of resolved requests.
export const name = '0007-approval-queues';

export const up: string[] = [
  `create index approvals_pending_idx on approvals (expires_at) where status = 'pending'`,
  `create index approvals_unexecuted_idx on approvals (resolved_at) where status = 'approved' and (context->'outcome') is null`,
];
