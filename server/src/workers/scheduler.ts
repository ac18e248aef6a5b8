import { requestContext } from '../request-context.js';
import type { Logger } from 'pino';
import type { Clock } from '@handoff/shared';
import type { RunRow } from '../infra/db/entities.js';
import { em, type Orm } from '../infra/db/orm.js';
import { RunEvent } from '../domain/run-machine.js';
import { appendAudit, auditAppendCall, SYSTEM } from '../audit/audit-append.js';
import type { LocalWorker, Notifier } from '../hooks/notifier.js';
import { applyRunEvent } from '../runs/run-queries.js';
import type { RunService } from '../runs/run-service.js';
import { claimOldestQueued } from './scheduler-queries.js';

export interface SchedulerOptions {
  clock: Clock;
  /** A worker whose push was not acked in time is skipped this long, ms. Default 5000. */
  timeoutBackoffMs?: number;
  /** A worker that refused a push (e.g. at capacity) is skipped this long, ms. Default 1000. */
  refusalBackoffMs?: number;
}

/** One worker socket on this node, as scheduling sees it. */
interface Slot {
  worker: LocalWorker;
  /** Runs it has (kept at hello, accepted since, minus exits; corrected by its heartbeats): free capacity is known here, not asked of the database. */
  active: number;
  /** A push is out and not answered yet: no second one until it is. */
  pushing: boolean;
  /** Skipped until then (ms since the epoch) after a timeout or a refusal. */
  backoffUntil: number;
}

/**
 * Pushes queued runs to the worker sockets connected to this node. Work is proportional
 * to queued runs, not to connected workers: the node knows whether anything may be queued
 * (a run created or requeued on any node kicks every node through the adapter, and a slow
 * safety recheck catches a kick lost with Redis), so a pass with nothing queued costs no
 * query; a run is offered only to workers with free capacity known in memory. A claim is
 * one conditional statement (`… FOR UPDATE SKIP LOCKED` that also checks the worker's
 * capacity in the database), so a run is never given to two workers even with many hub
 * nodes, and a stale in-memory count costs one refused claim, never a double assignment.
 * A pass never waits for a worker: it claims and pushes, and the ack (or its timeout) is
 * handled on its own. A refused or unacked push puts the run back in the queue.
 */
export class Scheduler {
  /** By socket id: a worker's stale socket never stands for its live one. */
  private readonly slots = new Map<string, Slot>();
  private running: Promise<void> = Promise.resolve();
  private again = false;
  private busy = false;
  /** Bumped whenever something may have been queued; `emptyAt` is the value at which the queue was last found empty. */
  private queueEpoch = 1;
  private emptyAt = 0;
  /** A run just created on this node (see `queued`): the next claim tries it first. */
  private likely: string | null = null;
  /** Passes run, and those that cost no query because the queue was known empty (for tests and diagnostics). */
  readonly stats = { passes: 0, idlePasses: 0 };
  private readonly clock: Clock;
  private readonly timeoutBackoffMs: number;
  private readonly refusalBackoffMs: number;

  constructor(
    private readonly orm: Orm,
    private readonly runs: RunService,
    private readonly notifier: Notifier,
    private readonly log: Logger,
    options: SchedulerOptions,
  ) {
    this.clock = options.clock;
    this.timeoutBackoffMs = options.timeoutBackoffMs ?? 5000;
    this.refusalBackoffMs = options.refusalBackoffMs ?? 1000;
  }

  /** A worker socket said hello; `active` = the runs it kept. */
  addWorker(worker: LocalWorker, active = 0): void {
    this.slots.set(worker.socketId, { worker, active, pushing: false, backoffUntil: 0 });
    if (active < worker.capacity) void this.kick();
  }

  /** Only this socket's registration: the same worker's other (newer) socket stays. */
  removeWorker(socketId: string): void {
    this.slots.delete(socketId);
  }

  /** The worker on this socket reported how many runs it has (its heartbeat): the in-memory count follows the worker's own. */
  activeRuns(socketId: string, active: number): void {
    const slot = this.slots.get(socketId);
    if (!slot || slot.pushing || slot.active === active) return;
    const freed = active < slot.active;
    slot.active = active;
    if (freed) void this.kick();
  }

  /** A run of the worker on this socket ended: one slot is free again. */
  runEnded(socketId: string): void {
    const slot = this.slots.get(socketId);
    if (!slot) return;
    slot.active = Math.max(0, slot.active - 1);
    void this.kick();
  }

  /**
   * A run may have been queued (created or requeued, on any node), or a recheck is due: the
   * next pass claims until the queue is found empty again. `created`: a run just created on
   * this node, most likely the queue's head, which the pass's first claim tries directly.
   */
  queued(created?: string): Promise<void> {
    this.queueEpoch += 1;
    if (created) this.likely = created;
    return this.kick();
  }

  /** Schedules a pass; passes never overlap on one node (capacity checks stay exact). */
  kick(): Promise<void> {
    if (this.busy) {
      this.again = true;
      return this.running;
    }
    this.busy = true;
    // Outside the kicking request's context: the claims' audit rows (run.assign) are the
    // scheduler's, not the command's (its access log line names its own correlation id only).
    this.running = requestContext.exit(async () => {
      try {
        do {
          this.again = false;
          await this.pass();
        } while (this.again);
      } catch (err) {
        this.log.error({ err }, 'scheduling pass failed');
      } finally {
        this.busy = false;
      }
    });
    return this.running;
  }

  private async pass(): Promise<void> {
    this.stats.passes += 1;
    // Known empty since the last kick that could have queued something: no query at all.
    if (this.emptyAt === this.queueEpoch) {
      this.stats.idlePasses += 1;
      return;
    }
    const epoch = this.queueEpoch;
    const now = this.clock.now();
    for (const slot of this.slots.values()) {
      if (slot.pushing || slot.backoffUntil > now || slot.active >= slot.worker.capacity) continue;
      const likely = this.likely;
      this.likely = null;
      const claim = await this.claim(slot.worker, likely);
      if (!claim.queued) {
        // A kick that arrived during this pass may have queued more: only then is it not known empty.
        if (this.queueEpoch === epoch) this.emptyAt = epoch;
        return;
      }
      // Gone or replaced while its claim ran: the run goes back to the queue at once.
      const current = this.slots.get(slot.worker.socketId) === slot;
      if (!claim.run) {
        // The database counts more runs on it than this node did (e.g. assigned through another socket).
        slot.active = slot.worker.capacity;
        continue;
      }
      slot.active += 1;
      if (current) void this.push(slot, claim.run);
      else void this.giveBack(slot.worker.id, claim.run.id, 'worker left before the push');
    }
  }

  /** The oldest queued run, if the database agrees the worker has room, with its audit row: one or two round trips, no transaction (see `claimOldestQueued`). */
  private claim(worker: LocalWorker, likely: string | null): Promise<{ queued: boolean; run: RunRow | null }> {
    const at = this.clock.date();
    return claimOldestQueued(em(this.orm), worker.id, worker.capacity, (runId) => auditAppendCall({ runId, actor: SYSTEM, action: 'run.assign', metadata: { workerId: worker.id } }, at, 'c.id'), likely);
  }

  private async giveBack(workerId: string, runId: string, reason: string): Promise<void> {
    try {
      if (await this.requeue(runId, workerId, reason)) this.notifier.kickSchedulers();
    } catch (err) {
      this.log.error({ err, runId, workerId }, 'could not requeue a claimed run');
    }
  }

  /** Pushes one claimed run; runs on its own, never inside a pass. */
  private async push(slot: Slot, run: RunRow): Promise<void> {
    const { worker } = slot;
    slot.pushing = true;
    try {
      // The worker first (the run's first frame waits on it), dashboards at the same time; a
      // failed publish must not strand the claimed run unpushed. Pushes carry revisions, so
      // the order in which dashboards hear of the assignment and of the start does not matter.
      const published = this.runs.publish(run.id).catch((err: unknown) => this.log.warn({ err, runId: run.id }, 'could not publish an assignment'));
      const outcome = await worker.assign({ runId: run.id, command: run.command, cwd: run.cwd ?? null, env: run.env });
      await published;
      if (outcome !== 'accepted') slot.active = Math.max(0, slot.active - 1);
      if (outcome === 'accepted') {
        this.log.info({ runId: run.id, workerId: worker.id }, 'run assigned');
        return;
      }
      const timedOut = outcome === 'timeout';
      slot.backoffUntil = this.clock.now() + (timedOut ? this.timeoutBackoffMs : this.refusalBackoffMs);
      this.log.warn({ runId: run.id, workerId: worker.id, reason: timedOut ? 'no ack in time' : outcome.refused }, 'assignment not accepted; requeued');
      const requeued = await this.requeue(run.id, worker.id, timedOut ? 'no ack in time' : outcome.refused);
      // It may have started the run after all (a late ack): it must not keep it.
      if (requeued && timedOut) this.notifier.cancelOnWorker(worker.id, run.id);
      // Another worker, on any node, may take it now.
      if (requeued) this.notifier.kickSchedulers();
      // Try this worker again once its backoff is over (others are tried at once).
      this.clock.setTimeout(() => void this.kick(), slot.backoffUntil - this.clock.now()).unref();
    } catch (err) {
      this.log.error({ err, runId: run.id, workerId: worker.id }, 'assignment push failed');
    } finally {
      slot.pushing = false;
      void this.kick();
    }
  }

  private async requeue(runId: string, workerId: string, reason: string): Promise<boolean> {
    const requeued = await em(this.orm).transactional(async (tx) => {
      const row = await applyRunEvent(tx, runId, RunEvent.unassign, { workerId: null, assignedAt: null }, { workerId });
      if (row) await appendAudit(tx, { runId, actor: SYSTEM, action: 'run.unassign', metadata: { workerId, reason } }, this.clock.date());
      return row;
    });
    if (requeued) await this.runs.publish(runId);
    return !!requeued;
  }
}
