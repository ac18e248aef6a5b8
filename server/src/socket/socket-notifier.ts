import { AppError, ErrorCode, rooms, type ApprovalRequest, type ControlApply, type ErrorBody, type Frame, type LiveSession, type OperatorMessage, type Run, type RunMessage, type ShareStart, type TermInput, type WriteGrant } from '@handoff/shared';
import type { Notifier } from '../hooks/notifier.js';
import { observeFanout } from '../metrics.js';
import type { DashboardNamespace, WorkerNamespace } from './namespaces.js';

/** How long a worker may take to hand keystrokes to tmux, ms. */
const TERM_INPUT_TIMEOUT_MS = 5000;

/** Delivers service events to socket rooms; the adapter fans them out across hub nodes. */
export class SocketNotifier implements Notifier {
  constructor(
    private readonly dashboard: DashboardNamespace,
    private readonly worker: WorkerNamespace,
    private readonly multiNode: boolean,
    private readonly kickLocal: (created?: string) => void,
  ) {}

  runUpdated(run: Run): void {
    this.dashboard.to([rooms.runs, rooms.run(run.id)]).emit('run:updated', run);
  }

  sessionUpdated(session: LiveSession): void {
    // The runs list too: its share badges (provider, time left) follow extends, revokes and expiry.
    this.dashboard.to([rooms.runs, rooms.run(session.runId)]).emit('session:updated', session);
  }

  termFrames(runId: string, frames: Frame[]): void {
    observeFanout(runId, frames);
    // A lagging viewer is skipped, never waited for (see lag-guard.ts).
    this.dashboard.to(rooms.term(runId)).except(rooms.lagging).emit('term:frame', { runId, frames });
  }

  cancelOnWorker(workerId: string, runId: string): void {
    this.worker.to(rooms.worker(workerId)).emit('run:cancel', { runId });
  }

  kickSchedulers(created?: string): void {
    this.kickLocal(created);
    if (this.multiNode) this.worker.serverSideEmit('scheduler:kick');
  }

  sessionGrace(session: LiveSession): void {
    this.dashboard.to(rooms.run(session.runId)).emit('session:grace', { sessionId: session.id, runId: session.runId, expiresAt: session.expiresAt });
  }

  disconnectToken(tokenId: string): void {
    // Through the adapter: the token's sockets on every node.
    this.dashboard.in(rooms.token(tokenId)).disconnectSockets(true);
    this.worker.in(rooms.token(tokenId)).disconnectSockets(true);
  }

  async termViewerCount(runId: string): Promise<number> {
    return (await this.dashboard.in(rooms.term(runId)).fetchSockets()).length;
  }

  closeTerm(runId: string, reason: string): void {
    const room = rooms.term(runId);
    this.dashboard.to(room).emit('term:closed', { runId, reason });
    // Through the adapter, so viewers on every node stop receiving frames at once.
    this.dashboard.in(room).socketsLeave(room);
  }

  controlApply(workerId: string, control: ControlApply): void {
    // The worker acks and then reports control:applied; a worker that misses this push
    // gets the desired state again when it says hello.
    this.worker.to(rooms.worker(workerId)).timeout(10_000).emit('control:apply', control, () => {});
  }

  deliverMessage(workerId: string, message: RunMessage, onAck: () => void): void {
    this.worker.to(rooms.worker(workerId)).timeout(10_000).emit('run:message', message, (_err: Error | null, acks: Array<{ ok: boolean }>) => {
      if (acks?.some((a) => a.ok)) onAck();
    });
  }

  messageCreated(message: OperatorMessage): void {
    this.dashboard.to(rooms.run(message.runId)).emit('message:created', message);
  }

  messageUpdated(message: OperatorMessage): void {
    this.dashboard.to(rooms.run(message.runId)).emit('message:updated', message);
  }

  needsOperator(runId: string, reason: string, at: string): void {
    this.dashboard.to([rooms.runs, rooms.run(runId)]).emit('run:needs-operator', { runId, reason, at });
  }

  approvalUpdated(approval: ApprovalRequest): void {
    this.dashboard.to(rooms.approvals).emit('approval:updated', approval);
  }

  startShare(workerId: string, share: ShareStart, onRefused: (message: string) => void): void {
    // The worker acks at once and reports share:ready / share:failed later; a refusal or
    // no worker at all fails the session now (the sweeper catches anything else).
    this.worker
      .to(rooms.worker(workerId))
      .timeout(share.timeoutMs)
      .emit('share:start', share, (err: Error | null, acks: Array<{ ok: boolean; error?: { message: string } }>) => {
        if (err && !acks?.length) onRefused('the worker did not answer the share request');
        else if (!acks?.length) onRefused('the run\'s worker is not connected');
        else if (!acks.some((a) => a.ok)) onRefused(acks[0]?.error?.message ?? 'the worker refused the share');
      });
  }

  grantUpdated(grant: WriteGrant): void {
    this.dashboard.to(rooms.run(grant.runId)).emit('grant:updated', grant);
  }

  termInput(workerId: string, input: TermInput): Promise<void> {
    return new Promise((resolve, reject) => {
      this.worker
        .to(rooms.worker(workerId))
        .timeout(TERM_INPUT_TIMEOUT_MS)
        .emit('term:input', input, (_err: Error | null, acks: Array<{ ok: boolean; error?: ErrorBody }>) => {
          if (acks?.some((a) => a.ok)) return resolve();
          const refusal = acks?.find((a) => !a.ok)?.error;
          reject(
            refusal
              ? new AppError({ code: ErrorCode.UNAVAILABLE, message: `the worker could not type into the terminal: ${refusal.message}` })
              : new AppError({ code: ErrorCode.UNAVAILABLE, message: 'the run\'s worker is not connected; the keys were not sent' }),
          );
        });
    });
  }

  stopShare(workerId: string, sessionId: string, reason: string): void {
    this.worker.to(rooms.worker(workerId)).emit('share:stop', { sessionId, reason });
  }
}
