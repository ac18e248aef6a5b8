// Issue 12: the audit log's table is named for what it is. `control_events` held every audited
// step (not only control changes) and shared its name with the control machine's events.
// A rename keeps every row, id, seq and hash as it was — the chain hashes the rows' content,
// never the table's name — and keeps the table's privileges (the hub role still only
// inserts), its triggers and its indexes; they are renamed too so that `\d audit_events`
// reads consistently. The two functions that name the table in their bodies are redefined.
export const name = '0017-audit-events';

export const up: string[] = [
  `alter table control_events rename to audit_events`,
  `alter index control_events_pkey rename to audit_events_pkey`,
  `alter index control_events_chain_idx rename to audit_events_chain_idx`,
  `alter index control_events_run_seq_idx rename to audit_events_run_seq_idx`,
  `alter index control_events_at_idx rename to audit_events_at_idx`,
  `alter trigger control_events_no_update on audit_events rename to audit_events_no_update`,
  `alter trigger control_events_no_truncate on audit_events rename to audit_events_no_truncate`,
  `alter trigger control_events_webhooks on audit_events rename to audit_events_webhooks`,
  `alter function control_events_append_only() rename to audit_events_append_only`,
  `create or replace function audit_events_append_only() returns trigger language plpgsql as $$
    begin raise exception 'audit_events is append-only'; end $$`,
  `create or replace function audit_append(
     p_run_id uuid, p_id uuid, p_session_id uuid, p_correlation_id uuid, p_actor_type varchar, p_actor_id varchar,
     p_action varchar, p_result varchar, p_at timestamptz, p_metadata jsonb, p_prefix text, p_suffix text
   ) returns table (chain_seq int, chain_prev_hash varchar, chain_hash varchar)
   language plpgsql as $$
   declare
     head_seq int;
     head_hash varchar;
     next_hash varchar;
   begin
     perform pg_advisory_xact_lock(hashtextextended('audit:' || coalesce(p_run_id::text, 'global'), 0));
     if p_run_id is null then
       select e.seq, e.hash into head_seq, head_hash from audit_events e where e.run_id is null order by e.seq desc limit 1;
     else
       select e.seq, e.hash into head_seq, head_hash from audit_events e where e.run_id = p_run_id order by e.seq desc limit 1;
     end if;
     head_seq := coalesce(head_seq, 0) + 1;
     next_hash := encode(sha256(convert_to(coalesce(head_hash, '') || E'\\n' || p_prefix || head_seq::text || p_suffix, 'UTF8')), 'hex');
     insert into audit_events (id, run_id, seq, session_id, correlation_id, actor_type, actor_id, action, result, at, metadata, prev_hash, hash)
       values (p_id, p_run_id, head_seq, p_session_id, p_correlation_id, p_actor_type, p_actor_id, p_action, p_result, p_at, p_metadata, head_hash, next_hash);
     return query select head_seq, head_hash, next_hash;
   end $$`,
];
