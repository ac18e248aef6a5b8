import type { Logger } from 'pino';
import { AppError, ErrorCode, type Clock, type OperatorMessage } from '@handoff/shared';
import { OperatorMessageSchema, UserSchema, type OperatorMessage as MessageRow } from '../infra/db/entities.js';
import { em, type Orm } from '../infra/db/orm.js';
import { appendAudit } from '../audit/audit-append.js';
import { uuidv7 } from '../infra/ids.js';
import type { Notifier } from '../hooks/notifier.js';
import type { PolicyGate, UserActor } from '../policy/policy-gate.js';
import { requireRun } from '../runs/run-queries.js';
import { undeliveredForWorker } from './message-queries.js';

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
  constructor(
    private readonly orm: Orm,
    private readonly notifier: Notifier,
    private readonly gate: PolicyGate,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  async send(actor: UserActor, runId: string, text: string): Promise<OperatorMessage> {
    const run = await requireRun(em(this.orm), runId);
    await this.gate.check('message.send', actor, { runId, runLabels: run.labels }, { chars: text.length });
    if (!['queued', 'assigned', 'running'].includes(run.status)) {
      throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `run ${runId} is ${run.status}: its agent can no longer read messages` });
    }
    const row = await em(this.orm).transactional(async (tx) => {
      const m = tx.create(OperatorMessageSchema, { id: uuidv7(), runId, actorId: actor.id, message: text, createdAt: this.clock.date(), deliveredAt: null });
      await tx.flush();
      // The text itself is data, not audit metadata: the row records who, when and how long.
      await appendAudit(tx, { runId, actor, action: 'message.send', metadata: { messageId: m.id, chars: text.length } }, m.createdAt);
      return m;
    });
    const message = view(row, actor.name);
    this.notifier.messageCreated(message);
    if (run.workerId) {
      // Stored and committed: a failure to look up older ones must not fail the send.
      await this.deliverThrough(run.workerId, row).catch((err: unknown) => {
        this.log.error({ err, messageId: row.id }, 'could not look up older undelivered messages; delivering this one alone');
        this.deliver(run.workerId!, message);
      });
    }
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
    const rows = await undeliveredForWorker(em(this.orm), workerId);
    if (!rows.length) return;
    const messages = await em(this.orm).find(OperatorMessageSchema, { id: { $in: rows.map((r) => r.id) } }, { orderBy: { createdAt: 'asc', id: 'asc' } });
    await this.deliverInOrder(workerId, messages);
  }

  /**
   * A new message goes out behind every older one of its run the worker has not acked, in
   * order: a worker that reconnected a moment ago may not have had its redelivery yet, and the
   * inbox must not get the new message first (it takes each id once; the repeats are acked).
   */
  private async deliverThrough(workerId: string, m: MessageRow): Promise<void> {
    const pending = await em(this.orm).find(
      OperatorMessageSchema,
      { runId: m.runId, deliveredAt: null, createdAt: { $lte: m.createdAt } },
      { orderBy: { createdAt: 'asc', id: 'asc' } },
    );
    await this.deliverInOrder(workerId, pending.filter((p) => p.createdAt < m.createdAt || p.id <= m.id));
  }

  /** Sends `rows` (oldest first) to the worker, each with its author's name. */
  private async deliverInOrder(workerId: string, rows: MessageRow[]): Promise<void> {
    const names = await this.names(rows.map((r) => r.actorId));
    for (const r of rows) this.deliver(workerId, view(r, names.get(r.actorId) ?? '?'));
  }

  private deliver(workerId: string, m: OperatorMessage): void {
    this.notifier.deliverMessage(workerId, { runId: m.runId, messageId: m.id, ts: m.createdAt, actor: m.actorName, message: m.message }, () => {
      const deliveredAt = this.clock.date();
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
