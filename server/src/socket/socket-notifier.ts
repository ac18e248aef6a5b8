import { rooms, type Frame, type LiveSession, type Run } from '@handoff/shared';
import type { Notifier } from '../services/notifier.js';
import type { DashboardNamespace, WorkerNamespace } from './namespaces.js';

/** Delivers service events to socket rooms; the adapter fans them out across hub nodes. */
export class SocketNotifier implements Notifier {
  constructor(
    private readonly dashboard: DashboardNamespace,
    private readonly worker: WorkerNamespace,
    private readonly multiNode: boolean,
    private readonly kickLocal: () => void,
  ) {}

  runUpdated(run: Run): void {
    this.dashboard.to([rooms.runs, rooms.run(run.id)]).emit('run:updated', run);
  }

  sessionUpdated(session: LiveSession): void {
    this.dashboard.to(rooms.run(session.runId)).emit('session:updated', session);
  }

  termFrames(runId: string, frames: Frame[]): void {
    this.dashboard.to(rooms.term(runId)).emit('term:frame', { runId, frames });
  }

  cancelOnWorker(workerId: string, runId: string): void {
    this.worker.to(rooms.worker(workerId)).emit('run:cancel', { runId });
  }

  kickSchedulers(): void {
    this.kickLocal();
    if (this.multiNode) this.worker.serverSideEmit('scheduler:kick');
  }
}
