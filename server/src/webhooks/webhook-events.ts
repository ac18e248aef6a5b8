import { FINISHED_RUN_STATUSES, type ControlApply, type Run } from '@handoff/shared';
import type { Notifier } from '../hooks/notifier.js';
import type { WebhookService } from './webhook-service.js';

/**
 * The notifier, plus a prompt delivery pass. The events themselves are queued by the database
 * in the transaction of the change (migration 0012: a trigger on the audit insert), so nothing
 * here can lose one; this only saves them the wait for the next poll: the services call the
 * notifier right after their commit, exactly where the events of docs/webhooks.md happen, and
 * this node then looks for due deliveries at once. A node that dies before it kicks leaves the
 * rows to any node's poller (WEBHOOK_POLL_INTERVAL).
 */
export function withWebhookEvents(notifier: Notifier, webhooks: Pick<WebhookService, 'kick'>): Notifier {
  const kick = () => webhooks.kick();
  // Only the pushes that follow an event: a run update that is not its end costs nothing.
  const hooks: Partial<Notifier> = {
    needsOperator: kick,
    approvalUpdated: kick,
    sessionGrace: kick,
    runUpdated(run: Run) {
      if (FINISHED_RUN_STATUSES.includes(run.status)) kick();
    },
    controlApply(_workerId: string, c: ControlApply) {
      if (c.state === 'operator' || c.handback) kick();
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
