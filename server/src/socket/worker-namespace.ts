import type { Logger } from 'pino';
import type { Socket } from 'socket.io';
import { AppError, ErrorCode, rooms, workerClientEvents as events, type Ack, type Clock, type HubToWorker, type RunAssignment, type WorkerToHub } from '@handoff/shared';
import type { AuthService } from '../auth/auth-service.js';
import type { AssignOutcome, LocalWorker } from '../hooks/notifier.js';
import type { LiveSessionService } from '../sessions/live-session-service.js';
import type { RunService } from '../runs/run-service.js';
import type { Scheduler } from '../workers/scheduler.js';
import type { ControlService } from '../control/control-service.js';
import type { MessageService } from '../messages/message-service.js';
import { RecordingRefused, type TerminalService } from '../terminal/terminal-service.js';
import type { WorkerPresence } from '../workers/worker-presence.js';
import { authenticateHandshake, type HandshakeThrottle, socketEvents } from './on.js';
import type { HubToHub, WorkerNamespace } from './namespaces.js';
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

/** A start's reactions after its ack: tried this many times in all, the retries after 250 ms, 500 ms, 1 s. */
const START_REACTION_ATTEMPTS = 4;
const START_REACTION_RETRY_MS = 250;

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
  /**
   * Runs a start's reactions after its ack. The worker will not report the start again once it
   * has the ack, so a failure (the database, for a moment) is retried here, as a repeat — which
   * starts only what the run never had, asks nothing of the worker twice, and nothing for a run
   * no longer running — a few times, backing off.
   */
  const afterStart = (runId: string, reactions: () => Promise<void>, wlog: Logger): void => {
    const done = (async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          if (attempt === 1) await reactions();
          else {
            const again = await deps.runs.startedView(runId);
            if (again.run.status === 'running') await deps.runs.announceStarted(again.run, { repeat: true });
          }
          if (attempt > 1) wlog.info({ runId, attempt }, 'the run\'s start reactions succeeded on a retry');
          return;
        } catch (err) {
          if (attempt >= START_REACTION_ATTEMPTS) {
            wlog.error({ err, runId, attempt }, 'the run started, but its reactions failed (shares asked for before it started, a configured share); gave up');
            return;
          }
          wlog.warn({ err, runId, attempt }, 'the run started, but its reactions failed; retrying');
          await new Promise<void>((resolve) => deps.clock.setTimeout(() => resolve(), START_REACTION_RETRY_MS * 2 ** (attempt - 1)));
        }
      }
    })().finally(() => {
      if (startsInFlight.get(runId) === done) startsInFlight.delete(runId);
    });
    startsInFlight.set(runId, done);
  };

  // Another node created or requeued a run (or freed capacity): the queue may hold work for our workers.
  nsp.on('scheduler:kick', () => void deps.scheduler.queued());

  const wlog = (c: WorkerConnection) => log.child({ workerId: c.id, worker: c.name, socketId: c.socketId });

  /**
   * A run report is taken only from the run's worker while the hub still has the run
   * as active. Otherwise it is refused (audited once per run and socket) and the worker
   * is told to stop the run: it is not (any more) its to run.
   */
  const guard = async (c: WorkerConnection, runId: string, what: string, allowOver = false): Promise<void> => {
    const { verdict, run } = await deps.runs.reportVerdict(c.id, runId);
    if (verdict === 'ok' || (verdict === 'over' && allowOver)) return;
    await refuse(c, runId, what, run);
  };
  const refuse = async (c: WorkerConnection, runId: string, what: string, run?: Awaited<ReturnType<RunService['reportVerdict']>>['run']): Promise<never> => {
    c.socket.emit('run:cancel', { runId });
    c.refusedAudited ??= new Set();
    if (!c.refusedAudited.has(runId)) {
      c.refusedAudited.add(runId);
      const row = run ?? (await deps.runs.reportVerdict(c.id, runId)).run;
      await deps.runs.auditRefusedReport(c.id, row, what);
    }
    throw new AppError({ code: ErrorCode.FORBIDDEN, message: `run ${runId} is not (any more) this worker's: stop it` });
  };

  const attach = socketEvents(events, log, {
    'worker:hello': (c, { capacity, runs, version }) => hellos.run(async () => {
      const { socket } = c;
      // Gone while waiting for its turn: nothing to do.
      if (!socket.connected) throw new AppError({ code: ErrorCode.UNAVAILABLE, message: 'disconnected before hello' });
      const connectedAt = deps.clock.date();
      await socket.join(rooms.worker(c.id));
      // A worker has one live connection: its older sockets, on any node, are dropped (through the adapter).
      nsp.in(rooms.worker(c.id)).except(socket.id).disconnectSockets(true);
      const wasLost = await deps.presence.hello(c.id, capacity, version, connectedAt);
      const lost = await deps.runs.reconcileWorker(c.id, runs);
      if (lost.length) wlog(c).warn({ lost }, 'worker no longer has these runs; marked lost');
      // lastSeq must be what is recorded: this node's unrecorded frames of those runs are written first.
      await Promise.all(runs.map((runId) => deps.terminal.close(runId)));
      const verdicts = await deps.runs.adoptionVerdicts(c.id, runs);
      if (wasLost) {
        const kept = await deps.runs.reclaim(c.id, 'hello', verdicts.filter((v) => v.keep).map((v) => v.runId));
        wlog(c).warn({ reclaimed: kept }, 'lost worker came back within the reclaim grace');
      }
      // Gone while saying hello: nothing to register (its disconnect already ran).
      if (!socket.connected) throw new AppError({ code: ErrorCode.UNAVAILABLE, message: 'disconnected during hello' });
      c.watchShares = await deps.sessions.hasExternalShares(c.id);
      c.helloAt = connectedAt;
      c.lastBeatAt = deps.clock.now();
      c.capacity = capacity;
      deps.scheduler.addWorker(c, verdicts.filter((v) => v.keep).length);
      // What it missed while away: the desired control state and undelivered messages.
      await deps.control.resync(c.id);
      await deps.messages.redeliver(c.id);
      wlog(c).info({ capacity, version, runs: runs.length }, 'worker connected');
      return { workerId: c.id, name: c.name, heartbeatIntervalMs: deps.heartbeatIntervalMs, abandonAfterMs: deps.abandonAfterMs, runs: verdicts };
    }),

    'worker:heartbeat': async (c, { activeRuns, shares }) => {
      c.requireHello();
      // In a steady stream, noted in memory and acked at once: the node writes every
      // heartbeat it heard in one statement per flush. After a silence long enough for the
      // worker to have been declared lost (frozen with its socket up), written at once and
      // its runs reclaimed before the ack.
      const now = deps.clock.now();
      const silentFor = now - c.lastBeatAt;
      c.lastBeatAt = now;
      if (silentFor < deps.workerLostAfterMs) deps.presence.heartbeat(c.id);
      else if (await deps.presence.heardAfterSilence(c.id)) {
        const kept = await deps.runs.reclaim(c.id, 'heartbeat');
        wlog(c).warn({ reclaimed: kept }, 'lost worker heard again within the reclaim grace');
      }
      deps.scheduler.activeRuns(c.socketId, activeRuns);
      if (c.watchShares || shares.length) c.watchShares = await deps.sessions.onHeartbeat(c.id, shares);
      return {};
    },

    'control:applied': async (c, report) => {
      c.requireHello();
      // The report's own statement is the ownership check (see `ControlService.onApplied`).
      const outcome = await deps.control.onApplied(c.id, report);
      if (outcome) await refuse(c, report.runId, 'control:applied', outcome.refused);
      return {};
    },

    'run:needs-operator': async (c, { runId, reason }) => {
      c.requireHello();
      await guard(c, runId, 'run:needs-operator');
      await deps.runs.needsOperator(c.id, runId, reason);
      return {};
    },

    'share:ready': async (c, { sessionId, attachRo, attachRw }) => {
      c.requireHello();
      await deps.sessions.onShareReady(c.id, sessionId, attachRo, attachRw);
      c.watchShares = true;
      // Only the provider and id: attach data (RW above all) never reaches a log line.
      wlog(c).info({ sessionId }, 'share ready');
      return {};
    },

    'share:failed': async (c, { sessionId, message }) => {
      c.requireHello();
      await deps.sessions.onShareFailed(c.id, sessionId, message);
      return {};
    },

    'run:started': async (c, { runId, pane, sinceMs }) => {
      c.requireHello();
      // The report's update is conditional on the run being this worker's and assigned, so
      // the verdict is read only when it changed nothing (a repeat, or a run no longer its).
      const started = await deps.runs.reportStarted(c.id, runId, pane, sinceMs);
      // A repeat (the worker resends until acked): the first report's handling may have failed
      // after the start committed, before its web share (nobody could watch the run) and its
      // other reactions; or its ack was lost after them.
      const repeated = started ? null : await guard(c, runId, 'run:started').then(() => deps.runs.startedView(runId));
      if (repeated && (await deps.sessions.ensureStartWebShare(repeated.run, repeated.sessions))) await deps.runs.publish(runId);
      // Before the ack (after which the worker sends output), in two more round trips: the
      // default web share, then the dashboards' update — a dashboard sees the run `running`
      // with its web share READY, and before its first frame. Beside them, at once: the run's
      // output stream is attached (its first frames need no ownership read of their own), and
      // control changes and messages sent while the run was assigned are pushed now that it
      // exists (the worker reports a control change it applied only after this ack). Any of
      // them failing refuses the report, which the worker sends again.
      const announced = started ? deps.sessions.openStartWebShare(started.run, started.sessions).then(() => deps.runs.publish(runId)) : null;
      await Promise.all([
        announced,
        started ? deps.terminal.opened(runId, { workerId: c.id, socketId: c.socketId }) : null,
        deps.control.resync(c.id),
        deps.messages.redeliver(c.id),
      ]);
      // The run's other reactions follow at once, off the first frame's path: a share asked for
      // while it was assigned, a configured tmate/upterm share. Its exit report waits for them
      // (see `run:exited`).
      if (started) afterStart(runId, () => deps.runs.announceStarted(started.run), wlog(c));
      else if (repeated?.run.status === 'running') afterStart(runId, () => deps.runs.announceStarted(repeated.run, { repeat: true }), wlog(c));
      return {};
    },

    'run:output': async (c, { runId, frames }) => {
      c.requireHello();
      // Ownership is checked when this socket's stream of the run is attached (and after a
      // silence); every recording insert re-checks it in the database (a requeue or a loss ends it).
      try {
        return { lastSeq: await deps.terminal.ingest(runId, { workerId: c.id, socketId: c.socketId }, frames, () => guard(c, runId, 'run:output')) };
      } catch (err) {
        if (err instanceof RecordingRefused) return refuse(c, runId, 'run:output');
        throw err;
      }
    },

    'run:exited': async (c, { runId, exitCode, error }) => {
      c.requireHello();
      // After the start's reactions: a run that ends at once does not get its web share after its end.
      await startsInFlight.get(runId);
      // The exit of a run the hub gave up on is still taken (a cancelled run keeps its real exit code).
      await guard(c, runId, 'run:exited', true);
      await deps.runs.reportExited(c.id, runId, exitCode, error);
      deps.scheduler.runEnded(c.socketId);
      await deps.terminal.close(runId);
      return {};
    },
  }, { state: connectionOf });

  /** Shared by every worker socket, like the event listeners (the socket is `this`). */
  function onDisconnect(this: WorkerSocket, reason: string): void {
    const c = connectionOf(this);
    deps.scheduler.removeWorker(c.socketId);
    wlog(c).info({ reason }, 'worker disconnected');
    void (async () => {
      // Recorded what it fed through this node, then forgotten: its next node reads the database.
      await deps.terminal.closeSocket(c.socketId);
      // Offline only if no newer hello (on any node) replaced this connection.
      if (c.helloAt) await deps.presence.left(c.id, c.helloAt);
    })().catch((err) => wlog(c).error({ err }, 'worker disconnect cleanup failed'));
  }

  nsp.on('connection', (socket) => {
    socket.data.conn = new WorkerConnection(socket, socket.data.principal as { id: string; name: string }, deps.assignAckTimeoutMs);
    socket.on('disconnect', onDisconnect);
    attach(socket);
  });
}

type WorkerSocket = Socket<WorkerToHub, HubToWorker, HubToHub>;

const connectionOf = (socket: Socket): WorkerConnection => socket.data.conn as WorkerConnection;

/**
 * One worker socket on this node: what its handlers keep between events, and how the
 * scheduler pushes it a run. Made at connection and kept on the socket (`socket.data.conn`);
 * nothing else is made per socket until it is used.
 */
class WorkerConnection implements LocalWorker {
  readonly id: string;
  readonly name: string;
  readonly socketId: string;
  /** Runs it takes at once (its hello's). */
  capacity = 0;
  helloAt: Date | null = null;
  /** Whether this worker may have external shares to reconcile (asked at hello, inside the admission bound; kept up by each check). */
  watchShares = false;
  /** When this socket was last heard (hello or heartbeat), clock ms. */
  lastBeatAt = 0;
  /** Runs whose refused reports were audited on this socket: once per run and socket (made at the first refusal). */
  refusedAudited: Set<string> | null = null;

  constructor(
    readonly socket: WorkerSocket,
    worker: { id: string; name: string },
    private readonly assignAckTimeoutMs: number,
  ) {
    this.id = worker.id;
    this.name = worker.name;
    this.socketId = socket.id;
  }

  requireHello(): void {
    if (!this.helloAt) throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: 'send worker:hello first' });
  }

  assign(assignment: RunAssignment): Promise<AssignOutcome> {
    return new Promise<AssignOutcome>((resolve) => {
      this.socket.timeout(this.assignAckTimeoutMs).emit('run:assign', assignment, (err: Error | null, res: Ack<object>) => {
        if (err) resolve('timeout');
        else if (!res?.ok) resolve({ refused: res?.error?.message ?? 'worker refused the assignment' });
        else resolve('accepted');
      });
    });
  }
}
