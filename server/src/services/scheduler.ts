import type { Logger } from 'pino';
import { RunSchema, type RunRow } from '../db/entities.js';
import { em, type Orm } from '../db/orm.js';
import { RunEvent, runTransition } from '../domain/run-machine.js';
import { appendAudit, SYSTEM } from './audit.js';
import type { LocalWorker, Notifier } from './notifier.js';
import { applyRunEvent, type RunService } from './runs.js';

interface ClaimedRow {
  id: string;
}

export interface SchedulerOptions {
  /** A worker whose push was not acked in time is skipped this long, ms. Default 5000. */
  timeoutBackoffMs?: number;
  /** A worker that refused a push (e.g. at capacity) is skipped this long, ms. Default 1000. */
  refusalBackoffMs?: number;
}

/** One worker socket on this node, as scheduling sees it. */
interface Slot {
  worker: LocalWorker;
  /** A push is out and not answered yet: no second one until it is. */
  pushing: boolean;
  /** Skipped until then (ms since the epoch) after a timeout or a refusal. */
  backoffUntil: number;
}

/**
 * Pushes queued runs to the worker sockets connected to this node. A claim is one
 * conditional `UPDATE … WHERE status = 'queued' … FOR UPDATE SKIP LOCKED` that also
 * checks the worker's capacity, so a run is never given to two workers even with many
 * hub nodes. A pass never waits for a worker: it claims and pushes, and the ack (or its
 * timeout) is handled on its own — a silent worker costs nobody else anything. A refused
 * or unacked push puts the run back in the queue.
 */
export class Scheduler {
  /** By socket id: a worker's stale socket never stands for its live one. */
  private readonly slots = new Map<string, Slot>();
  private running: Promise<void> = Promise.resolve();
  private again = false;
  private busy = false;
  private readonly timeoutBackoffMs: number;
  private readonly refusalBackoffMs: number;

  constructor(
    private readonly orm: Orm,
    private readonly runs: RunService,
    private readonly notifier: Notifier,
    private readonly log: Logger,
    options: SchedulerOptions = {},
  ) {
    this.timeoutBackoffMs = options.timeoutBackoffMs ?? 5000;
    this.refusalBackoffMs = options.refusalBackoffMs ?? 1000;
  }

  addWorker(worker: LocalWorker): void {
    this.slots.set(worker.socketId, { worker, pushing: false, backoffUntil: 0 });
    this.kick();
  }

  /** Only this socket's registration: the same worker's other (newer) socket stays. */
  removeWorker(socketId: string): void {
    this.slots.delete(socketId);
  }

  /** Schedules a pass; passes never overlap on one node (capacity checks stay exact). */
  kick(): Promise<void> {
    if (this.busy) {
      this.again = true;
      return this.running;
    }
    this.busy = true;
    this.running = (async () => {
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
    })();
    return this.running;
  }

  private async pass(): Promise<void> {
    const now = Date.now();
    const ready = [...this.slots.values()].filter((s) => !s.pushing && s.backoffUntil <= now);
    if (!ready.length) return;
    // One indexed probe per pass, not one query per worker, when nothing waits.
    const [queued] = await em(this.orm).execute<{ any: boolean }[]>(`select exists (select 1 from runs where status = 'queued') as any`);
    if (!queued?.any) return;
    for (const slot of ready) {
      if (this.slots.get(slot.worker.socketId) !== slot || slot.pushing) continue;
      const claimed = await this.claim(slot.worker);
      if (claimed) void this.push(slot, claimed);
    }
  }

  private async claim(worker: LocalWorker): Promise<RunRow | null> {
    return em(this.orm).transactional(async (tx) => {
      const rows = await tx.execute<ClaimedRow[]>(
        `update runs set status = ?, worker_id = ?, assigned_at = now()
          where id = (select id from runs where status = 'queued' order by created_at, id limit 1 for update skip locked)
            and status = 'queued'
            and (select count(*) from runs where worker_id = ? and status in ('assigned','running')) < ?
          returning id`,
        [runTransition('queued', RunEvent.assign), worker.id, worker.id, worker.capacity],
      );
      const id = rows[0]?.id;
      if (!id) return null;
      await appendAudit(tx, { runId: id, actor: SYSTEM, action: 'run.assign', metadata: { workerId: worker.id } });
      return tx.findOneOrFail(RunSchema, { id }, { refresh: true });
    });
  }

  /** Pushes one claimed run; runs on its own, never inside a pass. */
  private async push(slot: Slot, run: RunRow): Promise<void> {
    const { worker } = slot;
    slot.pushing = true;
    try {
      // Dashboards learn of it now; a failed publish must not strand the claimed run unpushed.
      await this.runs.publish(run.id).catch((err: unknown) => this.log.warn({ err, runId: run.id }, 'could not publish an assignment'));
      const outcome = await worker.assign({ runId: run.id, command: run.command, cwd: run.cwd ?? null, env: run.env });
      if (outcome === 'accepted') {
        this.log.info({ runId: run.id, workerId: worker.id }, 'run assigned');
        return;
      }
      const timedOut = outcome === 'timeout';
      slot.backoffUntil = Date.now() + (timedOut ? this.timeoutBackoffMs : this.refusalBackoffMs);
      this.log.warn({ runId: run.id, workerId: worker.id, reason: timedOut ? 'no ack in time' : outcome.refused }, 'assignment not accepted; requeued');
      const requeued = await this.requeue(run.id, worker.id, timedOut ? 'no ack in time' : outcome.refused);
      // It may have started the run after all (a late ack): it must not keep it.
      if (requeued && timedOut) this.notifier.cancelOnWorker(worker.id, run.id);
      // Another worker, on any node, may take it now.
      if (requeued) this.notifier.kickSchedulers();
      // Try this worker again once its backoff is over (others are tried at once).
      setTimeout(() => void this.kick(), slot.backoffUntil - Date.now()).unref();
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
      if (row) await appendAudit(tx, { runId, actor: SYSTEM, action: 'run.unassign', metadata: { workerId, reason } });
      return row;
    });
    if (requeued) await this.runs.publish(runId);
    return !!requeued;
  }
}
