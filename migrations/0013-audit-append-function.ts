// One round trip per audit append (issue 10 item 2). An append used to be three statements in
// the caller's transaction (advisory lock, read the chain's head, insert) plus the ORM's flush.
// `audit_append` does the same in one call: it takes the chain's advisory lock (the same key as
// before, `audit:<run id | global>`, so nodes on either version serialize together), reads the
// head, computes the row's hash and inserts it. The hash is computed here because the seq and
// the previous hash are only known after the lock: the caller sends the row's canonical JSON
// (docs/audit.md) cut around the seq (`prefix` || seq || `suffix`), so the hashed bytes are
// exactly those `chainHash` would hash. PL/pgSQL runs each statement on a fresh snapshot under
// READ COMMITTED, so the head read after the lock sees the row a writer we waited for committed.
// The function runs as its caller (no SECURITY DEFINER): the hub's role still only inserts.
export const name = '0013-audit-append-function';

export const up: string[] = [
  `create function audit_append(
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
       select e.seq, e.hash into head_seq, head_hash from control_events e where e.run_id is null order by e.seq desc limit 1;
     else
       select e.seq, e.hash into head_seq, head_hash from control_events e where e.run_id = p_run_id order by e.seq desc limit 1;
     end if;
     head_seq := coalesce(head_seq, 0) + 1;
     next_hash := encode(sha256(convert_to(coalesce(head_hash, '') || E'\\n' || p_prefix || head_seq::text || p_suffix, 'UTF8')), 'hex');
     insert into control_events (id, run_id, seq, session_id, correlation_id, actor_type, actor_id, action, result, at, metadata, prev_hash, hash)
       values (p_id, p_run_id, head_seq, p_session_id, p_correlation_id, p_actor_type, p_actor_id, p_action, p_result, p_at, p_metadata, head_hash, next_hash);
     return query select head_seq, head_hash, next_hash;
   end $$`,
];
