import type { Logger } from 'pino';
import { AppError, ErrorCode, type OperatorMessage } from '@handoff/shared';
import { OperatorMessageSchema, UserSchema, type OperatorMessage as MessageRow } from '../db/entities.js';
import { em, type Orm } from '../db/orm.js';
import { appendAudit } from './audit.js';
import { uuidv7 } from './ids.js';
import type { Notifier } from './notifier.js';
import type { PolicyGate, UserActor } from './policy-gate.js';
import { requireRun } from './runs.js';

const view = (m: MessageRow, actorName: string): OperatorMessage => ({
  id: m.id, runId: m.runId, actorId: m.actorId, actorName, message: m.message,
  createdAt: m.createdAt.toISOString(), deliveredAt: m.deliveredAt?.toISOString() ?? null,
});

/**
 * Operator messages: persisted, fanned out to the run room at once, delivered to the
 * worker with an ack (`deliveredAt`), redelivered after a reconnect until acked (the
 * worker dedupes by id). A message never pauses the run.
 */
export class MessageService {
  gate!: PolicyGate;

  constructor(
    private readonly orm: Orm,
    private readonly notifier: Notifier,
    private readonly log: Logger,
  ) {}

  async send(actor: UserActor, runId: string, text: string): Promise<OperatorMessage> {
    const run = await requireRun(em(this.orm), runId);
    await this.gate.check('message.send', actor, { runId, runLabels: run.labels }, { chars: text.length });
    if (!['queued', 'assigned', 'running'].includes(run.status)) {
      throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `run ${runId} is ${run.status}: its agent can no longer read messages` });
    }
    const row = await em(this.orm).transactional(async (tx) => {
      const m = tx.create(OperatorMessageSchema, { id: uuidv7(), runId, actorId: actor.id, message: text, createdAt: new Date(), deliveredAt: null });
      await tx.flush();
      // The text itself is data, not audit metadata: the row records who, when and how long.
      await appendAudit(tx, { runId, actor, action: 'message.send', metadata: { messageId: m.id, chars: text.length } });
      return m;
    });
    const message = view(row, actor.name);
    this.notifier.messageCreated(message);
    if (run.workerId) this.deliver(run.workerId, message);
    return message;
  }

  async list(runId: string): Promise<OperatorMessage[]> {
    const tx = em(this.orm);
    await requireRun(tx, runId);
    const rows = await tx.find(OperatorMessageSchema, { runId }, { orderBy: { createdAt: 'asc', id: 'asc' } });
    const names = await this.names(rows.map((r) => r.actorId));
    return rows.map((r) => view(r, names.get(r.actorId) ?? '?'));
  }

  /** On (re)connect or run start: deliver, in order, what the worker has not acked yet. */
  async redeliver(workerId: string): Promise<void> {
    const rows = await em(this.orm).execute<{ id: string }[]>(
      `select m.id from operator_messages m join runs r on r.id = m.run_id
        where r.worker_id = ? and r.status in ('assigned','running') and m.delivered_at is null order by m.created_at, m.id`,
      [workerId],
    );
    if (!rows.length) return;
    const messages = await em(this.orm).find(OperatorMessageSchema, { id: { $in: rows.map((r) => r.id) } }, { orderBy: { createdAt: 'asc', id: 'asc' } });
    const names = await this.names(messages.map((m) => m.actorId));
    for (const m of messages) this.deliver(workerId, view(m, names.get(m.actorId) ?? '?'));
  }

  private deliver(workerId: string, m: OperatorMessage): void {
    this.notifier.deliverMessage(workerId, { runId: m.runId, messageId: m.id, ts: m.createdAt, actor: m.actorName, message: m.message }, () => {
      const deliveredAt = new Date();
      void em(this.orm)
        .nativeUpdate(OperatorMessageSchema, { id: m.id, deliveredAt: null }, { deliveredAt })
        // Once per message: a redelivery that was acked again changes nothing.
        .then((n) => n === 1 && this.notifier.messageUpdated({ ...m, deliveredAt: deliveredAt.toISOString() }))
        .catch((err: unknown) => this.log.error({ err, messageId: m.id }, 'could not record a message delivery'));
    });
  }

  private async names(ids: string[]): Promise<Map<string, string>> {
    const users = ids.length ? await em(this.orm).find(UserSchema, { id: { $in: [...new Set(ids)] } }) : [];
    return new Map(users.map((u) => [u.id, u.name]));
  }
}
