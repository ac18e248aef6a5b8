import type { Logger } from 'pino';
import { RunSchema, type RunRow } from '../db/entities.js';
import { em, type Orm } from '../db/orm.js';
import { RunEvent, runTransition } from '../domain/run-machine.js';
import { appendAudit, SYSTEM } from './audit.js';
import type { LocalWorker } from './notifier.js';
import { applyRunEvent, type RunService } from './runs.js';

interface ClaimedRow {
  id: string;
}

/**
 * Pushes queued runs to workers connected to this node. A claim is one conditional
 * `UPDATE … WHERE status = 'queued' … FOR UPDATE SKIP LOCKED`, so a run is never
 * given to two workers even with many hub nodes; a refused or unacked push puts the
 * run back in the queue.
 */
export class Scheduler {
  private readonly workers = new Map<string, LocalWorker>();
  private running: Promise<void> = Promise.resolve();
  private again = false;
  private busy = false;

  constructor(
    private readonly orm: Orm,
    private readonly runs: RunService,
    private readonly log: Logger,
  ) {}

  addWorker(worker: LocalWorker): void {
    this.workers.set(worker.id, worker);
    this.kick();
  }

  removeWorker(workerId: string): void {
    this.workers.delete(workerId);
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
    for (const worker of [...this.workers.values()]) {
      for (;;) {
        if (!this.workers.has(worker.id)) break;
        const claimed = await this.claim(worker);
        // A worker that refused is not offered more in this pass; the next kick retries.
        if (!claimed || !(await this.push(worker, claimed))) break;
      }
    }
  }

  private async claim(worker: LocalWorker): Promise<RunRow | null> {
    return em(this.orm).transactional(async (tx) => {
      const [{ active } = { active: 0 }] = await tx.execute<{ active: number }[]>(
        `select count(*)::int as active from runs where worker_id = ? and status in ('assigned','running')`,
        [worker.id],
      );
      if (active >= worker.capacity) return null;
      const rows = await tx.execute<ClaimedRow[]>(
        `update runs set status = ?, worker_id = ?, assigned_at = now()
          where id = (select id from runs where status = 'queued' order by created_at, id limit 1 for update skip locked)
            and status = 'queued'
          returning id`,
        [runTransition('queued', RunEvent.assign), worker.id],
      );
      const id = rows[0]?.id;
      if (!id) return null;
      await appendAudit(tx, { runId: id, actor: SYSTEM, action: 'run.assign', metadata: { workerId: worker.id } });
      return tx.findOneOrFail(RunSchema, { id }, { refresh: true });
    });
  }

  private async push(worker: LocalWorker, run: RunRow): Promise<boolean> {
    await this.runs.publish(run.id);
    try {
      await worker.assign({ runId: run.id, command: run.command, cwd: run.cwd ?? null, env: run.env });
      this.log.info({ runId: run.id, workerId: worker.id }, 'run assigned');
      return true;
    } catch (err) {
      this.log.warn({ runId: run.id, workerId: worker.id, err: (err as Error).message }, 'assignment refused; requeued');
      const requeued = await em(this.orm).transactional(async (tx) => {
        const row = await applyRunEvent(tx, run.id, RunEvent.unassign, { workerId: null, assignedAt: null }, { workerId: worker.id });
        if (row) await appendAudit(tx, { runId: run.id, actor: SYSTEM, action: 'run.unassign', metadata: { workerId: worker.id, reason: (err as Error).message } });
        return row;
      });
      if (requeued) await this.runs.publish(run.id);
      return false;
    }
  }
}
