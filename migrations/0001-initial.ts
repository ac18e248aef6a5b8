// Initial schema: the full domain model of DESIGN.md §2. Plain SQL so the same
// statements run unchanged on PostgreSQL and on embedded PGlite.
export const name = '0001-initial';

export const up: string[] = [
  `create table users (
    id uuid primary key,
    name varchar(100) not null unique,
    role varchar(20) not null check (role in ('observer','operator','admin')),
    created_at timestamptz not null,
    disabled_at timestamptz null
  )`,
  `create table workers (
    id uuid primary key,
    name varchar(100) not null unique,
    capacity int not null default 1,
    status varchar(20) not null default 'offline',
    version varchar(50) null,
    connected_at timestamptz null,
    last_heartbeat_at timestamptz null,
    created_at timestamptz not null
  )`,
  `create table api_tokens (
    id uuid primary key,
    kind varchar(10) not null check (kind in ('user','worker')),
    user_id uuid null references users(id) on delete cascade,
    worker_id uuid null references workers(id) on delete cascade,
    token_hash varchar(64) not null unique,
    label varchar(100) not null,
    created_at timestamptz not null,
    last_used_at timestamptz null,
    revoked_at timestamptz null,
    check ((kind = 'user' and user_id is not null) or (kind = 'worker' and worker_id is not null))
  )`,
  `create table runs (
    id uuid primary key,
    title varchar(200) not null,
    command jsonb not null,
    cwd text null,
    env jsonb not null default '{}',
    labels jsonb not null default '{}',
    status varchar(20) not null,
    created_by varchar(100) not null,
    worker_id uuid null references workers(id),
    exit_code int null,
    error_message text null,
    control_state varchar(20) not null default 'agent',
    control_mode varchar(10) null,
    control_seq int not null default 0,
    control_applied_seq int not null default 0,
    controller_id varchar(100) null,
    needs_operator_reason text null,
    needs_operator_at timestamptz null,
    live_session_enabled boolean not null,
    created_at timestamptz not null,
    assigned_at timestamptz null,
    started_at timestamptz null,
    ended_at timestamptz null
  )`,
  `create index runs_status_created_idx on runs (status, created_at)`,
  `create index runs_created_idx on runs (created_at desc, id desc)`,
  `create index runs_worker_idx on runs (worker_id, status)`,
  `create table live_sessions (
    id uuid primary key,
    run_id uuid not null references runs(id) on delete cascade,
    provider varchar(10) not null,
    status varchar(10) not null,
    worker_id uuid null references workers(id),
    correlation_id uuid not null,
    created_by varchar(100) not null,
    created_at timestamptz not null,
    ready_at timestamptz null,
    ended_at timestamptz null,
    expires_at timestamptz not null,
    grace_warned_at timestamptz null,
    last_heartbeat_at timestamptz null,
    end_reason varchar(100) null,
    error_message text null,
    attach_ro jsonb null,
    attach_rw_enc text null
  )`,
  `create index live_sessions_run_idx on live_sessions (run_id, created_at)`,
  // At most one active session per (run, provider), enforced by the database.
  `create unique index live_sessions_one_active_idx on live_sessions (run_id, provider)
    where status in ('STARTING','READY')`,
  `create table write_grants (
    id uuid primary key,
    run_id uuid not null references runs(id) on delete cascade,
    session_id uuid not null references live_sessions(id) on delete cascade,
    grantee_id uuid not null references users(id),
    status varchar(10) not null,
    created_at timestamptz not null,
    expires_at timestamptz not null,
    ended_at timestamptz null,
    ended_by varchar(100) null
  )`,
  `create index write_grants_run_idx on write_grants (run_id, status)`,
  `create table control_events (
    id uuid primary key,
    run_id uuid null,
    -- position in the run's hash chain (1, 2, …); the chain's order, independent of clocks
    seq int not null,
    session_id uuid null,
    correlation_id uuid not null,
    actor_type varchar(10) not null,
    actor_id varchar(100) not null,
    action varchar(60) not null,
    result varchar(10) not null,
    at timestamptz not null,
    metadata jsonb not null default '{}',
    prev_hash varchar(64) null,
    hash varchar(64) not null
  )`,
  `create unique index control_events_chain_idx on control_events (coalesce(run_id, '00000000-0000-0000-0000-000000000000'::uuid), seq)`,
  // The audit log is append-only: the database refuses updates and deletes.
  `create function control_events_append_only() returns trigger language plpgsql as $$
    begin raise exception 'control_events is append-only'; end $$`,
  `create trigger control_events_no_update before update or delete on control_events
    for each row execute function control_events_append_only()`,
  `create table operator_messages (
    id uuid primary key,
    run_id uuid not null references runs(id) on delete cascade,
    actor_id uuid not null references users(id),
    message text not null,
    created_at timestamptz not null,
    delivered_at timestamptz null
  )`,
  `create index operator_messages_run_idx on operator_messages (run_id, created_at)`,
  `create table approvals (
    id uuid primary key,
    run_id uuid null references runs(id) on delete cascade,
    action varchar(60) not null,
    context jsonb not null default '{}',
    requester_id uuid not null references users(id),
    approver_roles jsonb not null default '[]',
    status varchar(10) not null,
    created_at timestamptz not null,
    expires_at timestamptz not null,
    resolved_at timestamptz null,
    resolved_by uuid null references users(id),
    reason text null
  )`,
  `create index approvals_status_idx on approvals (status, expires_at)`,
  `create table recording_chunks (
    run_id uuid not null references runs(id) on delete cascade,
    seq int not null,
    t int not null,
    data text not null,
    primary key (run_id, seq)
  )`,
];
