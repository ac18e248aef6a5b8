import type { Logger } from 'pino';
import { AppError, ErrorCode, rooms, workerClientEvents as events, type Ack, type Clock, type RunAssignment } from '@handoff/shared';
import type { AuthService } from '../auth/auth-service.js';
import type { AssignOutcome } from '../hooks/notifier.js';
import type { LiveSessionService } from '../sessions/live-session-service.js';
import type { RunService } from '../runs/run-service.js';
import type { Scheduler } from '../workers/scheduler.js';
import type { ControlService } from '../control/control-service.js';
import type { MessageService } from '../messages/message-service.js';
import { RecordingRefused, type TerminalService } from '../terminal/terminal-service.js';
import type { WorkerPresence } from '../workers/worker-presence.js';
import { authenticateHandshake, type HandshakeThrottle, on } from './on.js';
import type { WorkerNamespace } from './namespaces.js';
import { Semaphore } from './semaphore.js';

export interface WorkerNamespaceDeps {
  auth: AuthService;
  /** Per-IP budgets of the handshake. */
  throttle: HandshakeThrottle;
  runs: RunService;
  sessions: LiveSessionService;
  presence: WorkerPresence;
  scheduler: Scheduler;
  control: ControlService;
  messages: MessageService;
  terminal: TerminalService;
  log: Logger;
  heartbeatIntervalMs: number;
  /** WORKER_LOST_AFTER: a heartbeat after this long a silence on its socket is written at once (the worker may have been declared lost). */
  workerLostAfterMs: number;
  clock: Clock;
  /** HELLO_CONCURRENCY: hellos handled at once on this node; the others wait their turn (never refused). */
  helloConcurrency: number;
  /** WORKER_LOST_AFTER + WORKER_RECLAIM_GRACE: told to the worker for its dead-man switch. */
  abandonAfterMs: number;
  assignAckTimeoutMs: number;
}

/** `/worker`: workers authenticate with a worker token and act only for their own runs. */
export function setupWorkerNamespace(nsp: WorkerNamespace, deps: WorkerNamespaceDeps): void {
  const log = deps.log.child({ module: 'worker-socket' });

  // A fleet reconnecting at once (a node restart moves thousands of workers) is let in a few
  // at a time: each handshake and each hello is a few queries, and an unbounded burst would
  // starve the database pool that run reports and recordings need (its waits time out as
  // UNAVAILABLE). Handshakes and hellos share the bound; heartbeats do not wait for it.
  const hellos = new Semaphore(deps.helloConcurrency);
  const authenticate = authenticateHandshake(deps.auth, 'worker', log, deps.throttle);
  nsp.use((socket, next) => void hellos.run(() => new Promise<void>((done) => authenticate(socket, (err) => (next(err), done())))));

  /** A run's start reactions in progress on this node (see `run:started`), by run id: its exit report waits for them. */
  const startsInFlight = new Map<string, Promise<void>>();
  const afterStart = (runId: string, reactions: () => Promise<void>, wlog: Logger): void => {
    const done = reactions()
      .catch((err: unknown) => wlog.error({ err, runId }, 'the run started, but its reactions failed (shares asked for before it started)'))
      .finally(() => {
        if (startsInFlight.get(runId) === done) startsInFlight.delete(runId);
      });
    startsInFlight.set(runId, done);
  };

  // Another node created or requeued a run (or freed capacity): the queue may hold work for our workers.
  nsp.on('scheduler:kick', () => void deps.scheduler.queued());

  nsp.on('connection', (socket) => {
    const worker = socket.data.principal as { id: string; name: string };
    // Made for each line, not kept: an idle worker socket holds no logger of its own (its lines are few: connect, disconnect, warnings).
    const wlog = () => log.child({ workerId: worker.id, worker: worker.name, socketId: socket.id });
    let helloAt: Date | null = null;
    /** Whether this worker may have external shares to reconcile (asked at hello, inside the admission bound; kept up by each check). */
    let watchShares = false;
    /** When this socket was last heard (hello or heartbeat), clock ms. */
    let lastBeatAt = 0;
    /** Runs whose refused reports were audited on this socket: once per run and socket (made at the first refusal). */
    let refusedAudited: Set<string> | null = null;
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
      refusedAudited ??= new Set();
      if (!refusedAudited.has(runId)) {
        refusedAudited.add(runId);
        const row = run ?? (await deps.runs.reportVerdict(worker.id, runId)).run;
        await deps.runs.auditRefusedReport(worker.id, row, what);
      }
      throw new AppError({ code: ErrorCode.FORBIDDEN, message: `run ${runId} is not (any more) this worker's: stop it` });
    };

    on(socket, events, 'worker:hello', log, ({ capacity, runs, version }) => hellos.run(async () => {
      // Gone while waiting for its turn: nothing to do.
      if (!socket.connected) throw new AppError({ code: ErrorCode.UNAVAILABLE, message: 'disconnected before hello' });
      const connectedAt = deps.clock.date();
      await socket.join(rooms.worker(worker.id));
      // A worker has one live connection: its older sockets, on any node, are dropped (through the adapter).
      nsp.in(rooms.worker(worker.id)).except(socket.id).disconnectSockets(true);
      const wasLost = await deps.presence.hello(worker.id, capacity, version, connectedAt);
      const lost = await deps.runs.reconcileWorker(worker.id, runs);
      if (lost.length) wlog().warn({ lost }, 'worker no longer has these runs; marked lost');
      // lastSeq must be what is recorded: this node's unrecorded frames of those runs are written first.
      await Promise.all(runs.map((runId) => deps.terminal.close(runId)));
      const verdicts = await deps.runs.adoptionVerdicts(worker.id, runs);
      if (wasLost) {
        const kept = await deps.runs.reclaim(worker.id, 'hello', verdicts.filter((v) => v.keep).map((v) => v.runId));
        wlog().warn({ reclaimed: kept }, 'lost worker came back within the reclaim grace');
      }
      // Gone while saying hello: nothing to register (its disconnect already ran).
      if (!socket.connected) throw new AppError({ code: ErrorCode.UNAVAILABLE, message: 'disconnected during hello' });
      watchShares = await deps.sessions.hasExternalShares(worker.id);
      helloAt = connectedAt;
      lastBeatAt = deps.clock.now();
      const kept = verdicts.filter((v) => v.keep).length;
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
      }, kept);
      // What it missed while away: the desired control state and undelivered messages.
      await deps.control.resync(worker.id);
      await deps.messages.redeliver(worker.id);
      wlog().info({ capacity, version, runs: runs.length }, 'worker connected');
      return { workerId: worker.id, name: worker.name, heartbeatIntervalMs: deps.heartbeatIntervalMs, abandonAfterMs: deps.abandonAfterMs, runs: verdicts };
    }));

    on(socket, events, 'worker:heartbeat', log, async ({ activeRuns, shares }) => {
      requireHello();
      // In a steady stream, noted in memory and acked at once: the node writes every
      // heartbeat it heard in one statement per flush. After a silence long enough for the
      // worker to have been declared lost (frozen with its socket up), written at once and
      // its runs reclaimed before the ack.
      const now = deps.clock.now();
      const silentFor = now - lastBeatAt;
      lastBeatAt = now;
      if (silentFor < deps.workerLostAfterMs) deps.presence.heartbeat(worker.id);
      else if (await deps.presence.heardAfterSilence(worker.id)) {
        const kept = await deps.runs.reclaim(worker.id, 'heartbeat');
        wlog().warn({ reclaimed: kept }, 'lost worker heard again within the reclaim grace');
      }
      deps.scheduler.activeRuns(socket.id, activeRuns);
      if (watchShares || shares.length) watchShares = await deps.sessions.onHeartbeat(worker.id, shares);
      return {};
    });

    on(socket, events, 'control:applied', log, async (report) => {
      requireHello();
      // The report's own statement is the ownership check (see `ControlService.onApplied`).
      const outcome = await deps.control.onApplied(worker.id, report);
      if (outcome) await refuse(report.runId, 'control:applied', outcome.refused);
      return {};
    });

    on(socket, events, 'run:needs-operator', log, async ({ runId, reason }) => {
      requireHello();
      await guard(runId, 'run:needs-operator');
      await deps.runs.needsOperator(worker.id, runId, reason);
      return {};
    });

    on(socket, events, 'share:ready', log, async ({ sessionId, attachRo, attachRw }) => {
      requireHello();
      await deps.sessions.onShareReady(worker.id, sessionId, attachRo, attachRw);
      watchShares = true;
      // Only the provider and id: attach data (RW above all) never reaches a log line.
      wlog().info({ sessionId }, 'share ready');
      return {};
    });

    on(socket, events, 'share:failed', log, async ({ sessionId, message }) => {
      requireHello();
      await deps.sessions.onShareFailed(worker.id, sessionId, message);
      return {};
    });

    on(socket, events, 'run:started', log, async ({ runId, pane, sinceMs }) => {
      requireHello();
      // The report's update is conditional on the run being this worker's and assigned, so
      // the verdict is read only when it changed nothing (a repeat, or a run no longer its).
      const started = await deps.runs.reportStarted(worker.id, runId, pane, sinceMs);
      if (!started) await guard(runId, 'run:started');
      // Before the ack (after which the worker sends output), in two more round trips: the
      // default web share, then the dashboards' update — a dashboard sees the run `running`
      // with its web share READY, and before its first frame. Beside them, the run's output
      // stream is attached: its first frames need no ownership read of their own.
      if (started) {
        const announced = deps.sessions.openStartWebShare(started.run, started.sessions).then(() => deps.runs.publish(runId));
        await Promise.all([announced, deps.terminal.opened(runId, { workerId: worker.id, socketId: socket.id })]);
      }
      // Paused or messaged while still assigned: deliver now that the run exists (a failure
      // refuses the report, which the worker sends again).
      await Promise.all([deps.control.resync(worker.id), deps.messages.redeliver(worker.id)]);
      // The run's other reactions follow at once, off the first frame's path: a share asked for
      // while it was assigned, a configured tmate/upterm share. Its exit report waits for them
      // (see `run:exited`).
      if (started) afterStart(runId, () => deps.runs.announceStarted(started.run), wlog());
      return {};
    });

    on(socket, events, 'run:output', log, async ({ runId, frames }) => {
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

    on(socket, events, 'run:exited', log, async ({ runId, exitCode, error }) => {
      requireHello();
      // After the start's reactions: a run that ends at once does not get its web share after its end.
      await startsInFlight.get(runId);
      // The exit of a run the hub gave up on is still taken (a cancelled run keeps its real exit code).
      await guard(runId, 'run:exited', true);
      await deps.runs.reportExited(worker.id, runId, exitCode, error);
      deps.scheduler.runEnded(socket.id);
      await deps.terminal.close(runId);
      return {};
    });

    socket.on('disconnect', (reason) => {
      deps.scheduler.removeWorker(socket.id);
      wlog().info({ reason }, 'worker disconnected');
      void (async () => {
        // Recorded what it fed through this node, then forgotten: its next node reads the database.
        await deps.terminal.closeSocket(socket.id);
        // Offline only if no newer hello (on any node) replaced this connection.
        if (helloAt) await deps.presence.left(worker.id, helloAt);
      })().catch((err) => wlog().error({ err }, 'worker disconnect cleanup failed'));
    });
  });
}
