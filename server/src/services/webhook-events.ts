import { FINISHED_RUN_STATUSES, WebhookEvent, type ApprovalRequest, type ControlApply, type LiveSession, type Run } from '@handoff/shared';
import type { Notifier } from './notifier.js';
import type { WebhookService } from './webhooks.js';

/**
 * The notifier, plus webhook events. Services call the notifier after their transaction
 * committed, exactly where the events of docs/webhooks.md happen, so the events are taken
 * from those calls instead of from a second call in every service. Pushes can repeat (a
 * resync, a later update of a finished run): each event carries a key that makes it one
 * delivery per endpoint however often it is seen.
 */
export function withWebhookEvents(notifier: Notifier, webhooks: Pick<WebhookService, 'emit'>): Notifier {
  const hooks: Partial<Notifier> = {
    needsOperator(runId: string, reason: string, at: string) {
      webhooks.emit({ event: WebhookEvent.runNeedsOperator, key: `${runId}:${at}`, runId, at: new Date(at), data: { reason } });
    },
    approvalUpdated(a: ApprovalRequest) {
      const base = { approvalId: a.id, action: a.action, requester: a.requester.name };
      if (a.status === 'pending') webhooks.emit({ event: WebhookEvent.approvalRequested, key: a.id, runId: a.runId, data: { ...base, approverRoles: a.approverRoles, expiresAt: a.expiresAt } });
      else webhooks.emit({ event: WebhookEvent.approvalResolved, key: a.id, runId: a.runId, data: { ...base, status: a.status, resolvedBy: a.resolvedByName, reason: a.reason } });
    },
    sessionGrace(s: LiveSession) {
      webhooks.emit({ event: WebhookEvent.sessionGrace, key: s.id, runId: s.runId, data: { sessionId: s.id, provider: s.provider, expiresAt: s.expiresAt } });
    },
    runUpdated(run: Run) {
      if (FINISHED_RUN_STATUSES.includes(run.status)) {
        webhooks.emit({ event: WebhookEvent.runFinished, key: run.id, runId: run.id, at: run.endedAt ? new Date(run.endedAt) : undefined, data: { title: run.title, status: run.status, exitCode: run.exitCode } });
      }
    },
    controlApply(_workerId: string, c: ControlApply) {
      if (c.state === 'operator') {
        webhooks.emit({ event: WebhookEvent.takeoverStarted, key: `${c.runId}:${c.seq}`, runId: c.runId, data: { by: c.by?.name ?? null, correlationId: c.correlationId ?? null } });
      } else if (c.handback) {
        webhooks.emit({
          event: WebhookEvent.takeoverEnded,
          key: `${c.runId}:${c.seq}`,
          runId: c.runId,
          at: new Date(c.handback.at),
          data: { by: c.handback.by.name, summary: c.handback.summary, forcedFrom: c.handback.forcedFrom?.name ?? null, correlationId: c.correlationId ?? null },
        });
      }
    },
  };
  return new Proxy(notifier, {
    get(target, prop, receiver) {
      const original = Reflect.get(target, prop, receiver) as unknown;
      if (typeof original !== 'function') return original;
      const hook = hooks[prop as keyof Notifier] as ((...args: unknown[]) => void) | undefined;
      return (...args: unknown[]) => {
        const result = (original as (...a: unknown[]) => unknown).apply(target, args);
        hook?.(...args);
        return result;
      };
    },
  });
}
