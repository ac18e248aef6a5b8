// Webhook events are enqueued by the database, in the transaction of the change that causes
// them (docs/decisions.md, "Webhook events are written by the audit insert"). Every such change
// already appends its audit row in its own transaction; an AFTER INSERT trigger on the audit
// table turns the rows whose action is a webhook event into one `webhook_deliveries` row per
// subscribed endpoint. The change, its audit row and its deliveries commit together or not at
// all: a node dying right after the commit leaves the deliveries queued for any node to send.
//
// The payloads are the ones docs/webhooks.md documents (built before by webhook-events.ts from
// the post-commit pushes), read here from the rows the same transaction just wrote. The
// envelope's `id` is the audit row's id, so an event leads to the audit row that recorded it.
// The trigger follows the table if it is renamed; the function never names it.
export const name = '0012-webhook-outbox-trigger';

export const up: string[] = [
  // ISO 8601 in UTC with milliseconds, as JavaScript's toISOString() writes it (the documented format).
  `create function webhook_iso(ts timestamptz) returns text language sql immutable as $$
    select to_char(ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$`,
  `create function webhook_enqueue_from_audit() returns trigger language plpgsql as $$
    declare
      ev text;
      occurrence text;
      at_iso text := webhook_iso(NEW.at);
      data jsonb;
      r record;
    begin
      if NEW.action = 'run.needs-operator' then
        select needs_operator_reason, needs_operator_at into r from runs where id = NEW.run_id;
        if r.needs_operator_at is null then return null; end if;
        ev := 'run.needs_operator';
        at_iso := webhook_iso(r.needs_operator_at);
        occurrence := NEW.run_id || ':' || at_iso;
        data := jsonb_build_object('reason', r.needs_operator_reason);
      elsif NEW.action in ('approval.requested', 'handoff.requested',
                           'approval.approved', 'approval.denied', 'approval.expired', 'handoff.approved', 'handoff.denied') then
        select id, action, context, approver_roles, status, expires_at, reason into r from approvals where id = (NEW.metadata->>'approvalId')::uuid;
        if r.id is null then return null; end if;
        occurrence := r.id::text;
        if NEW.action in ('approval.requested', 'handoff.requested') then
          ev := 'approval.requested';
          data := jsonb_build_object('approvalId', r.id, 'action', r.action, 'requester', coalesce(r.context->'requester'->>'name', '?'),
                                     'approverRoles', r.approver_roles, 'expiresAt', webhook_iso(r.expires_at));
        else
          ev := 'approval.resolved';
          data := jsonb_build_object('approvalId', r.id, 'action', r.action, 'requester', coalesce(r.context->'requester'->>'name', '?'),
                                     'status', r.status, 'resolvedBy', r.context->'resolver'->>'name', 'reason', r.reason);
        end if;
      elsif NEW.action = 'session.grace' then
        select id, provider, expires_at into r from live_sessions where id = NEW.session_id;
        if r.id is null then return null; end if;
        ev := 'session.grace';
        occurrence := r.id::text;
        data := jsonb_build_object('sessionId', r.id, 'provider', r.provider, 'expiresAt', webhook_iso(r.expires_at));
      elsif NEW.action in ('run.exit', 'run.cancel', 'run.lost') then
        select title, status, exit_code, ended_at into r from runs where id = NEW.run_id;
        if r.status is null or r.status not in ('succeeded', 'failed', 'cancelled', 'lost') then return null; end if;
        ev := 'run.finished';
        occurrence := NEW.run_id::text;
        at_iso := webhook_iso(coalesce(r.ended_at, NEW.at));
        data := jsonb_build_object('title', r.title, 'status', r.status, 'exitCode', r.exit_code);
      elsif NEW.action = 'control.takeover' then
        select control_by into r from runs where id = NEW.run_id;
        ev := 'takeover.started';
        occurrence := NEW.run_id || ':' || (NEW.metadata->>'seq');
        data := jsonb_build_object('by', r.control_by->>'name', 'correlationId', NEW.correlation_id);
      elsif NEW.action = 'control.handback' then
        select handback into r from runs where id = NEW.run_id;
        if r.handback is null then return null; end if;
        ev := 'takeover.ended';
        occurrence := NEW.run_id || ':' || (NEW.metadata->>'seq');
        at_iso := coalesce(r.handback->>'at', at_iso);
        data := jsonb_build_object('by', r.handback->'by'->>'name', 'summary', r.handback->>'summary',
                                   'forcedFrom', r.handback->'forcedFrom'->>'name', 'correlationId', NEW.correlation_id);
      else
        return null;
      end if;
      -- One delivery per subscribed endpoint; the same occurrence recorded twice stays one.
      insert into webhook_deliveries (id, endpoint_id, event_id, event, dedupe_key, payload)
        select gen_random_uuid(), e.id, NEW.id, ev, ev || ':' || occurrence,
               jsonb_build_object('id', NEW.id, 'event', ev, 'at', at_iso, 'runId', NEW.run_id, 'data', data)
          from webhook_endpoints e
         where e.deleted_at is null and e.events @> jsonb_build_array(ev)
        on conflict (endpoint_id, dedupe_key) do nothing;
      return null;
    end $$`,
  // The WHEN clause keeps the hot audit rows (term.input, control.applied, …) from calling the function at all.
  `create trigger control_events_webhooks after insert on control_events for each row
    when (NEW.action in ('run.needs-operator', 'approval.requested', 'handoff.requested', 'approval.approved', 'approval.denied',
                         'approval.expired', 'handoff.approved', 'handoff.denied', 'session.grace', 'run.exit', 'run.cancel',
                         'run.lost', 'control.takeover', 'control.handback'))
    execute function webhook_enqueue_from_audit()`,
];
