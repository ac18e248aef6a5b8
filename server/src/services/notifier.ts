import type { Frame, LiveSession, Run, RunAssignment } from '@handoff/shared';

/**
 * The push side of the services: implemented by the socket edge (rooms, adapter
 * fan-out across hub nodes). Services call it after their transaction commits.
 */
export interface Notifier {
  runUpdated(run: Run): void;
  sessionUpdated(session: LiveSession): void;
  termFrames(runId: string, frames: Frame[]): void;
  /** Tells the worker (on whichever node it is connected) to cancel a run. */
  cancelOnWorker(workerId: string, runId: string): void;
  /** Asks every hub node to try assigning queued runs to its workers. */
  kickSchedulers(): void;
}

/** A worker connected to this node, as the scheduler sees it. */
export interface LocalWorker {
  id: string;
  capacity: number;
  /** Pushes an assignment; resolves when the worker accepted it, rejects otherwise. */
  assign(assignment: RunAssignment): Promise<void>;
}
