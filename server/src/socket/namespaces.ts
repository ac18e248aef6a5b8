import type { Namespace } from 'socket.io';
import type { DashboardToHub, Frame, HubToDashboard, HubToWorker, WorkerToHub } from '@handoff/shared';

/** Events between hub nodes (through the Redis adapter); never seen by clients. */
export interface HubToHub {
  /** Another node created a run or freed capacity: try to place queued runs. */
  'scheduler:kick': () => void;
  /** The sweeping node asks every node to write the heartbeats it heard (true: written) before it judges workers silent. */
  'presence:flush': (reply: (flushed: boolean) => void) => void;
  /** A late joiner's node asks for the frames a node has broadcast but not yet recorded. */
  'term:pending': (runId: string, reply: (frames: Frame[]) => void) => void;
  /** A kick decided on some node: forget these connections' presence in the run (they left its rooms). */
  'presence:drop': (runId: string, connIds: string[]) => void;
}

export type DashboardNamespace = Namespace<DashboardToHub, HubToDashboard, HubToHub>;
export type WorkerNamespace = Namespace<WorkerToHub, HubToWorker, HubToHub>;

/** How long a node waits for the others' pending frames before serving what it has. */
export const PEER_TIMEOUT_MS = 1000;
