// Anchors for the audit chains (issue 11 item 4): signed heads (latest seq + hash of a run's
// chain, Ed25519) written when a run ends and periodically by the sweeper leader. Append-only
// like control_events, so the hub's least-privilege role can only add heads, never drop them.
export const name = '0010-audit-checkpoints';

export const up: string[] = [
  `create table audit_checkpoints (
    id uuid primary key,
    run_id uuid not null,
    seq int not null,
    hash varchar(64) not null,
    signed_at timestamptz not null,
    -- first 16 hex digits of sha-256 over the raw public key: which key signed it
    key_id varchar(16) not null,
    signature text not null,
    -- 'exit' (the run ended) or 'sweep' (periodic): the sweep resumes from its own newest
    source varchar(8) not null,
    -- the newest row time the head covers: the sweep's watermark (it takes runs oldest first,
    -- so a batch cut short leaves every run it did not reach above the watermark)
    rows_until timestamptz not null,
    -- one head per chain position: a run exit and a sweep racing for it write it once
    unique (run_id, seq)
  )`,
  // The sweeper looks at rows written since its own last checkpoint only.
  `create index audit_checkpoints_sweep_idx on audit_checkpoints (rows_until) where source = 'sweep'`,
  `create index control_events_at_idx on control_events (at)`,
  `create function audit_append_only() returns trigger language plpgsql as $$
    begin raise exception '% is append-only', tg_table_name; end $$`,
  `create trigger audit_checkpoints_no_update before update or delete on audit_checkpoints
    for each row execute function audit_append_only()`,
  `create trigger audit_checkpoints_no_truncate before truncate on audit_checkpoints
    for each statement execute function audit_append_only()`,
];
