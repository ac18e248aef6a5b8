import type { Logger } from 'pino';
import { AppError, ErrorCode, rooms, workerClientEvents as events, type Ack, type RunAssignment } from '@handoff/shared';
import type { AuthService } from '../services/auth.js';
import type { AssignOutcome } from '../services/notifier.js';
import type { RunService } from '../services/runs.js';
import type { Scheduler } from '../services/scheduler.js';
import type { ControlService } from '../services/control.js';
import type { MessageService } from '../services/messages.js';
import { RecordingRefused, type TerminalService } from '../services/terminal.js';
import type { WorkerPresence } from '../services/worker-presence.js';
import { authenticateHandshake, type HandshakeThrottle, on } from './on.js';
import type { WorkerNamespace } from './namespaces.js';

export interface WorkerNamespaceDeps {
  auth: AuthService;
  /** Per-IP budgets of the handshake. */
  throttle: HandshakeThrottle;
  runs: RunService;
  presence: WorkerPresence;
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

  nsp.use(authenticateHandshake(deps.auth, 'worker', log, deps.throttle));

  // Another node created a run or freed capacity: try to place work on our workers.
  nsp.on('scheduler:kick', () => void deps.scheduler.kick());

  nsp.on('connection', (socket) => {
    const worker = socket.data.principal as { id: string; name: string };
    const wlog = log.child({ workerId: worker.id, worker: worker.name, socketId: socket.id });
    let helloAt: Date | null = null;
    /** Runs whose refused reports were audited on this socket: once per run and socket. */
    const refusedAudited = new Set<string>();
    const requireHello = () => {
      if (!helloAt) throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: 'send worker:hello first' });
    };

    /**
     * A run report is taken only from the run's worker while the hub still has the run
     * as active. Otherwise it is refused (audited once per run and socket) and the worker
     * is told to stop the run: it is not (any more) its to run.
     */
    const guard = async (runId: string, what: string, allowOver = false): Promise<void> => {
      const { verdict, run } = await deps.runs.reportVerdict(worker.id, runId);
      if (verdict === 'ok' || (verdict === 'over' && allowOver)) return;
      await refuse(runId, what, run);
    };
    const refuse = async (runId: string, what: string, run?: Awaited<ReturnType<RunService['reportVerdict']>>['run']): Promise<never> => {
      socket.emit('run:cancel', { runId });
      if (!refusedAudited.has(runId)) {
        refusedAudited.add(runId);
        const row = run ?? (await deps.runs.reportVerdict(worker.id, runId)).run;
        await deps.runs.auditRefusedReport(worker.id, row, what);
      }
      throw new AppError({ code: ErrorCode.FORBIDDEN, message: `run ${runId} is not (any more) this worker's: stop it` });
    };

    on(socket, events, 'worker:hello', wlog, async ({ capacity, runs, version }) => {
      const connectedAt = new Date();
      await socket.join(rooms.worker(worker.id));
      // A worker has one live connection: its older sockets, on any node, are dropped (through the adapter).
      nsp.in(rooms.worker(worker.id)).except(socket.id).disconnectSockets(true);
      const wasLost = await deps.presence.hello(worker.id, capacity, version, connectedAt);
      const lost = await deps.runs.reconcileWorker(worker.id, runs);
      if (lost.length) wlog.warn({ lost }, 'worker no longer has these runs; marked lost');
      // lastSeq must be what is recorded: this node's unrecorded frames of those runs are written first.
      await Promise.all(runs.map((runId) => deps.terminal.close(runId)));
      const verdicts = await deps.runs.adoptionVerdicts(worker.id, runs);
      if (wasLost) {
        const kept = await deps.runs.reclaim(worker.id, 'hello', verdicts.filter((v) => v.keep).map((v) => v.runId));
        wlog.warn({ reclaimed: kept }, 'lost worker came back within the reclaim grace');
      }
      // Gone while saying hello: nothing to register (its disconnect already ran).
      if (!socket.connected) throw new AppError({ code: ErrorCode.UNAVAILABLE, message: 'disconnected during hello' });
      helloAt = connectedAt;
      deps.scheduler.addWorker({
        id: worker.id,
        socketId: socket.id,
        capacity,
        assign: (assignment: RunAssignment) =>
          new Promise<AssignOutcome>((resolve) => {
            socket.timeout(deps.assignAckTimeoutMs).emit('run:assign', assignment, (err: Error | null, res: Ack<object>) => {
              if (err) resolve('timeout');
              else if (!res?.ok) resolve({ refused: res?.error?.message ?? 'worker refused the assignment' });
              else resolve('accepted');
            });
          }),
      });
      // What it missed while away: the desired control state and undelivered messages.
      await deps.control.resync(worker.id);
      await deps.messages.redeliver(worker.id);
      wlog.info({ capacity, version, runs: runs.length }, 'worker connected');
      return { workerId: worker.id, name: worker.name, heartbeatIntervalMs: deps.heartbeatIntervalMs, abandonAfterMs: deps.abandonAfterMs, runs: verdicts };
    });

    on(socket, events, 'worker:heartbeat', wlog, async ({ shares }) => {
      requireHello();
      // A worker frozen past WORKER_LOST_AFTER whose socket never dropped is heard again here.
      if (await deps.presence.heartbeat(worker.id)) {
        const kept = await deps.runs.reclaim(worker.id, 'heartbeat');
        wlog.warn({ reclaimed: kept }, 'lost worker heard again within the reclaim grace');
      }
      await deps.runs.sessions.onHeartbeat(worker.id, shares);
      return {};
    });

    on(socket, events, 'control:applied', wlog, async ({ runId, seq, effective, appliedAt, handoff }) => {
      requireHello();
      await guard(runId, 'control:applied');
      await deps.control.onApplied(worker.id, runId, seq, effective, appliedAt, handoff);
      return {};
    });

    on(socket, events, 'run:needs-operator', wlog, async ({ runId, reason }) => {
      requireHello();
      await guard(runId, 'run:needs-operator');
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
      await guard(runId, 'run:started');
      await deps.runs.reportStarted(worker.id, runId);
      // Paused or messaged while still assigned: deliver now that the run exists.
      await deps.control.resync(worker.id);
      await deps.messages.redeliver(worker.id);
      return {};
    });

    on(socket, events, 'run:output', wlog, async ({ runId, frames }) => {
      requireHello();
      // Ownership is checked when this socket's stream of the run is attached (and after a
      // silence); every recording insert re-checks it in the database (a requeue or a loss ends it).
      try {
        return { lastSeq: await deps.terminal.ingest(runId, { workerId: worker.id, socketId: socket.id }, frames, () => guard(runId, 'run:output')) };
      } catch (err) {
        if (err instanceof RecordingRefused) return refuse(runId, 'run:output');
        throw err;
      }
    });

    on(socket, events, 'run:exited', wlog, async ({ runId, exitCode, error }) => {
      requireHello();
      // The exit of a run the hub gave up on is still taken (a cancelled run keeps its real exit code).
      await guard(runId, 'run:exited', true);
      await deps.runs.reportExited(worker.id, runId, exitCode, error);
      await deps.terminal.close(runId);
      return {};
    });

    socket.on('disconnect', (reason) => {
      deps.scheduler.removeWorker(socket.id);
      wlog.info({ reason }, 'worker disconnected');
      void (async () => {
        // Recorded what it fed through this node, then forgotten: its next node reads the database.
        await deps.terminal.closeSocket(socket.id);
        // Offline only if no newer hello (on any node) replaced this connection.
        if (helloAt) await deps.presence.left(worker.id, helloAt);
      })().catch((err) => wlog.error({ err }, 'worker disconnect cleanup failed'));
    });
  });
}
