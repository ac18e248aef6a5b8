// Outbound webhooks (docs/webhooks.md): endpoints with their sealed signing secrets, and a
// delivery queue that any hub node claims from with FOR UPDATE SKIP LOCKED, so each
// delivery is attempted by one node at a time and survives restarts.
export const name = '0009-webhooks';

export const up: string[] = [
  `create table webhook_endpoints (
    id uuid primary key,
    url text not null,
    events jsonb not null,
    description text null,
    format text not null default 'json',
    secret_sealed text not null,
    created_by text not null,
    created_at timestamptz not null default now(),
    deleted_at timestamptz null
  )`,
  `create table webhook_deliveries (
    id uuid primary key,
    endpoint_id uuid not null references webhook_endpoints (id) on delete cascade,
    event_id uuid not null,
    event text not null,
    dedupe_key text not null,
    payload jsonb not null,
    status text not null default 'pending',
    attempts integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    claimed_until timestamptz null,
    last_error text null,
    last_status_code integer null,
    created_at timestamptz not null default now(),
    delivered_at timestamptz null
  )`,
  // One delivery per event per endpoint, however many times (or nodes) the event is emitted.
  `create unique index webhook_deliveries_dedupe_idx on webhook_deliveries (endpoint_id, dedupe_key)`,
  // The claim's scan: only rows still to deliver.
  `create index webhook_deliveries_due_idx on webhook_deliveries (next_attempt_at) where status in ('pending', 'delivering')`,
  `create index webhook_deliveries_endpoint_idx on webhook_deliveries (endpoint_id, created_at desc)`,
];
