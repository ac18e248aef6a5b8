import type { Logger } from 'pino';
import { AppError, ErrorCode, rooms, workerClientEvents as events, type Ack, type RunAssignment } from '@handoff/shared';
import { WorkerSchema } from '../db/entities.js';
import { em, type Orm } from '../db/orm.js';
import type { AuthService } from '../services/auth.js';
import type { RunService } from '../services/runs.js';
import type { Scheduler } from '../services/scheduler.js';
import type { ControlService } from '../services/control.js';
import type { MessageService } from '../services/messages.js';
import type { TerminalService } from '../services/terminal.js';
import { authenticateHandshake, on } from './on.js';
import type { WorkerNamespace } from './namespaces.js';

export interface WorkerNamespaceDeps {
  orm: Orm;
  auth: AuthService;
  runs: RunService;
  scheduler: Scheduler;
  control: ControlService;
  messages: MessageService;
  terminal: TerminalService;
  log: Logger;
  heartbeatIntervalMs: number;
  /** WORKER_LOST_AFTER + WORKER_RECLAIM_GRACE: told to the worker for its dead-man switch. */
  abandonAfterMs: number;
  assignAckTimeoutMs: number;
}

/** `/worker`: workers authenticate with a worker token and act only for their own runs. */
export function setupWorkerNamespace(nsp: WorkerNamespace, deps: WorkerNamespaceDeps): void {
  const log = deps.log.child({ module: 'worker-socket' });

  nsp.use(authenticateHandshake(deps.auth, 'worker', log));

  // Another node created a run or freed capacity: try to place work on our workers.
  nsp.on('scheduler:kick', () => void deps.scheduler.kick());

  nsp.on('connection', (socket) => {
    const worker = socket.data.principal as { id: string; name: string };
    const wlog = log.child({ workerId: worker.id, worker: worker.name });
    let helloDone = false;
    const owned = new Set<string>();
    const requireHello = () => {
      if (!helloDone) throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: 'send worker:hello first' });
    };

    on(socket, events, 'worker:hello', wlog, async ({ capacity, runs, version }) => {
      await em(deps.orm).nativeUpdate(WorkerSchema, { id: worker.id }, { capacity, version, status: 'online', connectedAt: new Date(), lastHeartbeatAt: new Date() });
      await socket.join(rooms.worker(worker.id));
      const lost = await deps.runs.reconcileWorker(worker.id, runs);
      if (lost.length) wlog.warn({ lost }, 'worker no longer has these runs; marked lost');
      helloDone = true;
      deps.scheduler.addWorker({
        id: worker.id,
        capacity,
        assign: (assignment: RunAssignment) =>
          new Promise<void>((resolve, reject) => {
            socket.timeout(deps.assignAckTimeoutMs).emit('run:assign', assignment, (err: Error | null, res: Ack<object>) => {
              if (err) reject(new Error('worker did not ack the assignment in time'));
              else if (!res?.ok) reject(new Error(res?.error?.message ?? 'worker refused the assignment'));
              else resolve();
            });
          }),
      });
      // What it missed while away: the desired control state and undelivered messages.
      await deps.control.resync(worker.id);
      await deps.messages.redeliver(worker.id);
      wlog.info({ capacity, version, runs: runs.length }, 'worker connected');
      const verdicts = await deps.runs.adoptionVerdicts(worker.id, runs);
      return { workerId: worker.id, name: worker.name, heartbeatIntervalMs: deps.heartbeatIntervalMs, abandonAfterMs: deps.abandonAfterMs, runs: verdicts };
    });

    on(socket, events, 'worker:heartbeat', wlog, async ({ shares }) => {
      requireHello();
      await em(deps.orm).nativeUpdate(WorkerSchema, { id: worker.id }, { lastHeartbeatAt: new Date(), status: 'online' });
      await deps.runs.sessions.onHeartbeat(worker.id, shares);
      return {};
    });

    on(socket, events, 'control:applied', wlog, async ({ runId, seq, effective, appliedAt, handoff }) => {
      requireHello();
      await deps.control.onApplied(worker.id, runId, seq, effective, appliedAt, handoff);
      return {};
    });

    on(socket, events, 'run:needs-operator', wlog, async ({ runId, reason }) => {
      requireHello();
      await deps.runs.needsOperator(worker.id, runId, reason);
      return {};
    });

    on(socket, events, 'share:ready', wlog, async ({ sessionId, attachRo, attachRw }) => {
      requireHello();
      await deps.runs.sessions.onShareReady(worker.id, sessionId, attachRo, attachRw);
      // Only the provider and id: attach data (RW above all) never reaches a log line.
      wlog.info({ sessionId }, 'share ready');
      return {};
    });

    on(socket, events, 'share:failed', wlog, async ({ sessionId, message }) => {
      requireHello();
      await deps.runs.sessions.onShareFailed(worker.id, sessionId, message);
      return {};
    });

    on(socket, events, 'run:started', wlog, async ({ runId }) => {
      requireHello();
      await deps.runs.reportStarted(worker.id, runId);
      // Paused or messaged while still assigned: deliver now that the run exists.
      await deps.control.resync(worker.id);
      await deps.messages.redeliver(worker.id);
      return {};
    });

    on(socket, events, 'run:output', wlog, async ({ runId, frames }) => {
      requireHello();
      // Ownership is checked once per run and connection, not on every frame.
      if (!owned.has(runId)) {
        await deps.runs.assertOwned(worker.id, runId, 'run:output');
        owned.add(runId);
      }
      return { lastSeq: await deps.terminal.ingest(runId, frames) };
    });

    on(socket, events, 'run:exited', wlog, async ({ runId, exitCode, error }) => {
      requireHello();
      await deps.runs.reportExited(worker.id, runId, exitCode, error);
      await deps.terminal.close(runId);
      owned.delete(runId);
      return {};
    });

    socket.on('disconnect', async (reason) => {
      deps.scheduler.removeWorker(worker.id);
      wlog.info({ reason }, 'worker disconnected');
      // Only mark offline if it has not already reconnected (possibly to another node).
      const others = await nsp.in(rooms.worker(worker.id)).fetchSockets().catch(() => []);
      if (others.length === 0) await em(deps.orm).nativeUpdate(WorkerSchema, { id: worker.id }, { status: 'offline' }).catch(() => {});
    });
  });
}
