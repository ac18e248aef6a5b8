import type { Logger } from 'pino';
import { dashboardClientEvents as events, rooms } from '@handoff/shared';
import type { AuthService } from '../services/auth.js';
import type { RunService } from '../services/runs.js';
import type { TerminalService } from '../services/terminal.js';
import type { DashboardNamespace } from './namespaces.js';
import { authenticateHandshake, on } from './on.js';

export interface DashboardDeps {
  auth: AuthService;
  runs: RunService;
  terminal: TerminalService;
  log: Logger;
}

/** `/dashboard`: users (observer and up) watch runs; every event is validated and acked. */
export function setupDashboardNamespace(nsp: DashboardNamespace, deps: DashboardDeps): void {
  const log = deps.log.child({ module: 'dashboard-socket' });

  nsp.use(authenticateHandshake(deps.auth, 'user', log));

  // Other nodes ask for the frames this node broadcast but has not recorded yet.
  nsp.on('term:pending', (runId, reply) => reply(deps.terminal.pendingFrames(runId)));

  nsp.on('connection', (socket) => {
    on(socket, events, 'runs:subscribe', log, async () => {
      await socket.join(rooms.runs);
      return {};
    });
    on(socket, events, 'run:subscribe', log, async ({ runId }) => {
      const run = await deps.runs.view(runId);
      await socket.join(rooms.run(runId));
      return { run };
    });
    on(socket, events, 'run:unsubscribe', log, async ({ runId }) => {
      await socket.leave(rooms.run(runId));
      return {};
    });
    on(socket, events, 'term:subscribe', log, async ({ runId, afterSeq }) => {
      await deps.runs.sessions.assertCanWatch(runId);
      // Join first, then read: every frame is either live after the join or in the scrollback.
      await socket.join(rooms.term(runId));
      return deps.terminal.scrollback(runId, afterSeq);
    });
    on(socket, events, 'approvals:subscribe', log, async () => {
      await socket.join(rooms.approvals);
      return {};
    });
    on(socket, events, 'term:unsubscribe', log, async ({ runId }) => {
      await socket.leave(rooms.term(runId));
      return {};
    });
  });
}
