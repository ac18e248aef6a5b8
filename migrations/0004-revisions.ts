// Pushes never go back in time: every row a dashboard follows carries a revision, bumped
// by the database on every update (whatever code path made it), and a run's revision is
// also bumped by any change of its sessions or grants, so the run view's revision orders
// every `run:updated`. Clients apply only a newer revision.
export const name = '0004-revisions';

const SESSION_FIELDS = 'status, provider, worker_id, ready_at, ended_at, expires_at, grace_warned_at, end_reason, error_message, attach_ro';

export const up: string[] = [
  `alter table runs add column revision integer not null default 1`,
  `alter table live_sessions add column revision integer not null default 1`,
  `alter table write_grants add column revision integer not null default 1`,
  `create or replace function handoff_bump_revision() returns trigger language plpgsql as $$
   begin
     new.revision := old.revision + 1;
     return new;
   end $$`,
  `create or replace function handoff_bump_run_revision() returns trigger language plpgsql as $$
   begin
     update runs set revision = revision + 1 where id = new.run_id;
     return null;
   end $$`,
  `create trigger runs_revision before update on runs for each row execute function handoff_bump_revision()`,
  // A session's heartbeat timestamp is not what dashboards follow: only these columns make a new revision.
  `create trigger live_sessions_revision before update of ${SESSION_FIELDS} on live_sessions for each row execute function handoff_bump_revision()`,
  `create trigger write_grants_revision before update on write_grants for each row execute function handoff_bump_revision()`,
  `create trigger live_sessions_run_revision after insert or update of ${SESSION_FIELDS} on live_sessions for each row execute function handoff_bump_run_revision()`,
  `create trigger write_grants_run_revision after insert or update on write_grants for each row execute function handoff_bump_run_revision()`,
];
