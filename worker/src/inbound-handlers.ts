import { AppError, ErrorCode, type RunMessage } from '@handoff/shared';
import type { Logger } from './logger.js';
import { on, type InboundPayload, type InboundSocket } from './on.js';
import type { RunEntry, RunRegistry } from './run-registry.js';
import { messageFlash } from './run-inbox.js';
import type { ShareManager } from './share-manager.js';

export interface InboundDeps {
  runs: RunRegistry;
  shares: Pick<ShareManager, 'start' | 'stop'>;
  /** WORKER_CAPACITY: runs starting or running here at once. */
  capacity: number;
  /** True once the worker is shutting down: no new work is taken. */
  stopping: () => boolean;
  logger: Logger;
}

/** Registers every hub→worker event on a new socket; each handler sees its payload parsed (see on.ts). */
export function listen(socket: InboundSocket, deps: InboundDeps): void {
  const log = deps.logger;
  on(socket, 'run:assign', log, (assignment) => assign(deps, assignment));
  on(socket, 'run:cancel', log, ({ runId }) => cancel(deps, runId));
  on(socket, 'control:apply', log, (change) => applyControl(deps, change));
  on(socket, 'run:message', log, (msg) => deliverMessage(deps, msg));
  on(socket, 'term:input', log, (input) => typeInto(deps, input));
  on(socket, 'share:start', log, (request) => deps.shares.start(request));
  on(socket, 'share:stop', log, (request) => deps.shares.stop(request));
}

const notRunningHere = (runId: string) => new AppError({ code: ErrorCode.NOT_FOUND, message: `run ${runId} is not running on this worker` });

/** `run:assign`: accepted (or already here) → ok, and the run starts; refused when stopping or at capacity. */
function assign({ runs, capacity, stopping }: InboundDeps, assignment: InboundPayload<'run:assign'>): Record<string, never> {
  if (runs.has(assignment.runId)) return {}; // the hub re-pushed a run this worker already has
  if (stopping()) throw new AppError({ code: ErrorCode.UNAVAILABLE, message: 'worker is shutting down' });
  const active = runs.activeIds.length;
  if (active >= capacity) throw new AppError({ code: ErrorCode.LIMIT_REACHED, message: `worker is at capacity (${active}/${capacity} runs)` });
  void runs.start(assignment);
  return {};
}

/** `run:cancel`: stops the run; a run this worker does not have is reported as exited, so the hub stops waiting for it. */
function cancel({ runs, stopping, logger }: InboundDeps, runId: string): void {
  const entry = runs.get(runId);
  if (entry?.adoption) {
    // Left by a predecessor and not continued yet: the verdict (keep:false) follows and stops it.
    entry.cancelRequested = true;
    return;
  }
  if (entry) {
    runs.cancel(entry);
    return;
  }
  // The hub believes this worker has the run (e.g. from before a restart): tell it otherwise.
  if (stopping()) return;
  logger.warn({ runId }, 'cancel for a run this worker does not have');
  runs.reportMissing(runId);
}

/** `control:apply`: accepted (or a seq already seen) → ok at once; `control:applied` follows once it took hold. */
function applyControl({ runs }: InboundDeps, change: InboundPayload<'control:apply'>): Record<string, never> {
  const entry = runs.active(change.runId);
  if (!entry) throw notRunningHere(change.runId);
  if (entry.control.apply(change) === 'closed') {
    throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: `run ${change.runId} is being cancelled on this worker` });
  }
  return {};
}

/** `run:message`: ok once the message is in the run's inbox (at most once per message id). */
async function deliverMessage({ runs, logger }: InboundDeps, msg: RunMessage): Promise<Record<string, never>> {
  const entry = runs.active(msg.runId);
  if (!entry) throw notRunningHere(msg.runId);
  const inbox = await entry.inbox; // a message may arrive while tmux is still starting the run
  if (!inbox || hasEnded(entry)) throw notRunningHere(msg.runId);
  try {
    if (await inbox.deliver(msg)) void entry.tmux?.status.flash(messageFlash(msg.actor, msg.message));
    return {};
  } catch (err) {
    if (hasEnded(entry)) throw notRunningHere(msg.runId); // the run directory went with the run
    logger.error({ err, runId: msg.runId }, 'could not append a message to the run inbox');
    throw new AppError({ code: ErrorCode.INTERNAL, message: 'could not write the message to the run inbox', cause: err });
  }
}

/** `term:input`: ok once tmux took the keys (the operator's shell during a takeover, else the agent's pane), in arrival order per run. */
async function typeInto({ runs, logger }: InboundDeps, { runId, data }: InboundPayload<'term:input'>): Promise<Record<string, never>> {
  const entry = runs.active(runId);
  if (!entry) throw notRunningHere(runId);
  // Keys may come while tmux is still letting the command go (its start is reported meanwhile).
  if (!entry.tmux) await entry.inbox;
  const run = entry.tmux;
  if (!run || hasEnded(entry)) throw notRunningHere(runId);
  entry.reporter.noteInput(); // before the keys go: their echo may come back before tmux's answer
  try {
    await run.input(data);
    return {};
  } catch (err) {
    if (err instanceof AppError) throw err;
    logger.error({ err, runId }, 'could not send keys to the run’s terminal');
    throw new AppError({ code: ErrorCode.INTERNAL, message: 'could not send the keys to the run’s terminal', cause: err });
  }
}

/** Read through a call: the phase changes across awaits, which TypeScript's narrowing does not see. */
function hasEnded(entry: RunEntry): boolean {
  return entry.phase === 'ended';
}
