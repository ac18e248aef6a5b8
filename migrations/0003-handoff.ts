// Takeover and hand-back: who made a control change, the correlation id a takeover and
// its hand-back share, the pending hand-back packet (re-pushed to a worker that was away),
// and what write grants need for display, correlation and RW-link rotation.
export const name = '0003-handoff';

export const up: string[] = [
  `alter table runs add column control_by jsonb null`,
  `alter table runs add column control_correlation_id uuid null`,
  `alter table runs add column handback jsonb null`,
  `alter table write_grants add column grantee_name varchar(100) not null default ''`,
  `alter table write_grants add column correlation_id uuid null`,
  `alter table write_grants add column reveals_rw boolean not null default false`,
  `alter table write_grants add column end_reason varchar(40) null`,
  // One live grant per operator and run: a second grant-write renews it.
  `create unique index write_grants_one_active_idx on write_grants (run_id, grantee_id) where status = 'active'`,
];
