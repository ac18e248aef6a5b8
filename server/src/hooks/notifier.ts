import type { ApprovalRequest, ControlApply, Frame, LiveSession, OperatorMessage, Run, RunAssignment, RunMessage, ShareStart, TermInput, WriteGrant } from '@handoff/shared';

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
  /**
   * Asks every hub node to try assigning queued runs to its workers. `created`: the id of a
   * run just created on this node, most likely the queue's head, which this node's scheduler
   * tries to claim first, in one statement (see `claimOldestQueued`).
   */
  kickSchedulers(created?: string): void;
  /** The one-time grace warning before a session expires (to the run room). */
  sessionGrace(session: LiveSession): void;
  /** Disconnects every socket (dashboard or worker, on every node) that authenticated with this token. */
  disconnectToken(tokenId: string): void;
  /** How many dashboards watch a run's terminal now, on every node. */
  termViewerCount(runId: string): Promise<number>;
  /** Cuts every live viewer of a run's terminal off now, on every node. */
  closeTerm(runId: string, reason: string): void;
  /** Asks the run's worker to start an external share; `onRefused` when it refuses or isn't there. */
  startShare(workerId: string, share: ShareStart, onRefused: (message: string) => void): void;
  /** Pushes a run's desired control state to its worker. */
  controlApply(workerId: string, control: ControlApply): void;
  /** Delivers an operator message to the run's worker; `onAck` once it is in the inbox. */
  deliverMessage(workerId: string, message: RunMessage, onAck: () => void): void;
  messageCreated(message: OperatorMessage): void;
  /** A message was delivered to the agent's inbox (to the run room). */
  messageUpdated(message: OperatorMessage): void;
  needsOperator(runId: string, reason: string, at: string): void;
  /** An approval request changed (to the approvals room). */
  approvalUpdated(approval: ApprovalRequest): void;
  /** A write grant was created, renewed or ended (to the run room; no attach data). */
  grantUpdated(grant: WriteGrant): void;
  /** Types into a run's terminal on its worker; resolves once tmux took the keys, rejects with an AppError otherwise. */
  termInput(workerId: string, input: TermInput): Promise<void>;
  /** Asks a worker to kill a share's process group. */
  stopShare(workerId: string, sessionId: string, reason: string): void;
}

/** A worker connected to this node, as the scheduler sees it. */
export interface LocalWorker {
  id: string;
  /** The socket it is connected on: a worker's registration is per socket. */
  socketId: string;
  capacity: number;
  /** Pushes an assignment; resolves with the worker's answer (never rejects). */
  assign(assignment: RunAssignment): Promise<AssignOutcome>;
}

/** How a worker answered a `run:assign`: took it, refused it (why), or did not answer in time. */
export type AssignOutcome = 'accepted' | 'timeout' | { refused: string };
