// A run's view (its live sessions, its active write grants, its creator's and worker's names)
// was four correlated subqueries in the select list of every statement that returns a run to
// dashboards. PostgreSQL planned them again on every call: 0.22 ms of planning for 0.14 ms of
// execution, on every control change, its `control:applied` and every publish. A PL/pgSQL
// function keeps its statements' plans for the life of the connection, so the calling
// statement plans a function call instead: 0.49 → 0.30 ms per view read (same rows).
// STABLE: it sees the calling statement's snapshot, as the subqueries did.
export const name = '0020-run-view-function';

export const up: string[] = [
  `create function run_view_extras(p_run uuid, p_created_by text, p_worker uuid) returns json
     language plpgsql stable as $$
   declare
     v_sessions json;
     v_grants json;
     v_creator text;
     v_worker text;
   begin
     select coalesce(json_agg(s order by s.created_at), '[]'::json) into v_sessions from live_sessions s where s.run_id = p_run;
     select coalesce(json_agg(g order by g.created_at), '[]'::json) into v_grants from write_grants g where g.run_id = p_run and g.status = 'active';
     -- created_by names a user (a uuid) or a token or system actor (any other text).
     if p_created_by ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
       select u.name into v_creator from users u where u.id = p_created_by::uuid;
     end if;
     if p_worker is not null then
       select w.name into v_worker from workers w where w.id = p_worker;
     end if;
     return json_build_object('sessions', v_sessions, 'grants', v_grants, 'creator', v_creator, 'worker', v_worker);
   end $$`,
];
