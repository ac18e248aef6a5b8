import { metrics, secondsSince } from '../metrics.js';
import type { Logger } from 'pino';
import type { Socket } from 'socket.io';
import { AppError, dashboardClientEvents as events, ErrorCode, rooms, type Role } from '@handoff/shared';
import { roleAtLeast } from '../domain/roles.js';
import type { AuthService } from '../auth/auth-service.js';
import type { LiveSessionService } from '../sessions/live-session-service.js';
import type { PresenceService } from '../presence/presence-service.js';
import type { RunService } from '../runs/run-service.js';
import type { RateLimiter } from '../infra/rate-limiter.js';
import type { TerminalService } from '../terminal/terminal-service.js';
import { CoalescedReads } from '../infra/coalesced-reads.js';
import type { WriteGrantService } from '../grants/write-grant-service.js';
import { userActor } from '../policy/policy-gate.js';
import type { DashboardNamespace } from './namespaces.js';
import { authenticateHandshake, type HandshakeThrottle, handshakeError, socketEvents } from './on.js';

export interface DashboardDeps {
  auth: AuthService;
  /** Per-IP budgets of the handshake. */
  throttle: HandshakeThrottle;
  runs: RunService;
  sessions: LiveSessionService;
  terminal: TerminalService;
  grants: WriteGrantService;
  /** Who watches each run (joined on run:subscribe, left on unsubscribe or disconnect). */
  presence: PresenceService;
  log: Logger;
  limiter: RateLimiter;
  /** Browser origins allowed besides the hub's own host. */
  allowedOrigins: string[];
}

/** `/dashboard`: users (observer and up) watch runs; every event is validated and acked. */
export function setupDashboardNamespace(nsp: DashboardNamespace, deps: DashboardDeps): void {
  const log = deps.log.child({ module: 'dashboard-socket' });

  // A browser always sends Origin: only the hub's own page (or an allowed origin) may connect.
  nsp.use((socket, next) => {
    const origin = socket.handshake.headers.origin;
    if (!origin || deps.allowedOrigins.includes(origin) || sameHost(origin, socket.handshake.headers.host)) return next();
    next(handshakeError(ErrorCode.FORBIDDEN, `origin ${origin} is not allowed`));
  });
  nsp.use(authenticateHandshake(deps.auth, 'user', log, deps.throttle));

  // A burst of term:subscribe (a thousand dashboards opening one run) costs a couple of
  // database reads per run, not one per dashboard: see CoalescedReads.
  const watchChecks = new CoalescedReads<void>();

  // Other nodes ask for the frames this node broadcast but has not recorded yet.
  nsp.on('term:pending', (runId, reply) => reply(deps.terminal.pendingFrames(runId)));

  const userOf = (socket: Socket) => socket.data.principal as { id: string; name: string; role: Role };
  const attach = socketEvents(events, log, {
    'runs:subscribe': async (socket) => {
      await socket.join(rooms.runs);
      return {};
    },
    'run:subscribe': async (socket, { runId }) => {
      const run = await deps.runs.view(runId);
      const user = userOf(socket);
      await deps.presence.assertMayWatch(runId, user.id);
      await socket.join(rooms.run(runId));
      await deps.presence.join(runId, socket.id, user);
      return { run };
    },
    'run:unsubscribe': async (socket, { runId }) => {
      await socket.leave(rooms.run(runId));
      await deps.presence.leave(runId, socket.id);
      return {};
    },
    'term:subscribe': async (socket, { runId, afterSeq, tailFrames }) => {
      // Subscribers of one run asking at once share the check (one that started after they asked).
      await watchChecks.read(runId, () => deps.sessions.assertCanWatch(runId));
      await deps.presence.assertMayWatch(runId, userOf(socket).id);
      // Join first, then read: every frame is either live after the join or in the scrollback.
      await socket.join(rooms.term(runId));
      const scrollback = await deps.terminal.scrollback(runId, afterSeq);
      // A bounded subscriber (a wall tile) gets the newest frames only: what it sends stays small.
      if (tailFrames === undefined || scrollback.frames.length <= tailFrames) return scrollback;
      return { frames: scrollback.frames.slice(-tailFrames), truncated: true };
    },
    'term:input': async (socket, input) => {
      // Everyone may try; only a live grant's holder gets through (others: FORBIDDEN, audited).
      const started = performance.now();
      await deps.grants.input(userActor(userOf(socket)), input);
      metrics.termInputAck.observe(secondsSince(started));
      return {};
    },
    'approvals:subscribe': async (socket) => {
      // Approval requests carry command details: the same audience as GET /api/approvals.
      if (!roleAtLeast(userOf(socket).role, 'operator')) throw new AppError({ code: ErrorCode.FORBIDDEN, message: 'requires role operator' });
      await socket.join(rooms.approvals);
      return {};
    },
    'term:unsubscribe': async (socket, { runId }) => {
      await socket.leave(rooms.term(runId));
      return {};
    },
  }, { state: (socket: Socket) => socket, limit: (socket) => deps.limiter.check(socket.id) });

  nsp.on('connection', (socket) => {
    socket.on('disconnect', () => {
      deps.limiter.forget(socket.id);
      void deps.presence.disconnected(socket.id);
    });
    attach(socket);
  });
}

/** Whether `origin` (a URL) names the host the client connected to. */
function sameHost(origin: string, host: string | undefined): boolean {
  try {
    return !!host && new URL(origin).host === host;
  } catch {
    return false;
  }
}
