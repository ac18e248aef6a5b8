import { type ControlBody, controlBodySchema, type PauseMode, type Run, runSchema, validationError } from '@handoff/shared';
import { api, errorMessage, pendingApprovalId, runPath } from './api.js';
import type { RunDetail } from './run-detail.svelte.js';

/** What the control panel is doing right now. */
export type ControlCommand = 'pause-soft' | 'pause-hard' | 'resume' | 'takeover' | 'handback' | 'dismiss';

/** A control command the policy sent to an approver (APPROVAL_REQUIRED); it runs once approved. */
export interface PendingControl {
  command: ControlCommand;
  approvalId: string;
}

/**
 * The operator's commands on a run: pause/resume, takeover/hand-back (`POST …/control`)
 * and dismissing a needs-operator flag. Answers update the run; whether the worker
 * applied a change arrives later, pushed (`control.appliedSeq`).
 */
export class RunControl {
  /** The command in flight, if any (one at a time). */
  busy = $state<ControlCommand | null>(null);
  /** The last command's failure, shown next to the button that sent it. */
  failure = $state<{ command: ControlCommand; message: string } | null>(null);
  /** Commands waiting for an approver, newest last. */
  pending = $state<PendingControl[]>([]);

  readonly #detail: RunDetail;

  constructor(detail: RunDetail) {
    this.#detail = detail;
  }

  pause(token: string, mode: PauseMode): Promise<boolean> {
    return this.#control(token, mode === 'hard' ? 'pause-hard' : 'pause-soft', { action: 'pause', mode });
  }

  resume(token: string): Promise<boolean> {
    return this.#control(token, 'resume', { action: 'resume' });
  }

  /** Pauses the agent and makes the caller the controller, with a write grant (may wait for approval). */
  takeover(token: string): Promise<boolean> {
    return this.#control(token, 'takeover', { action: 'takeover' });
  }

  /**
   * Gives the run back to its agent with `summary` (1–4000 characters, checked here
   * first). Resolves to whether the hub accepted it (the form then clears).
   */
  handback(token: string, summary: string): Promise<boolean> {
    const body = controlBodySchema.safeParse({ action: 'handback', summary });
    if (!body.success) {
      this.failure = { command: 'handback', message: validationError(body.error, 'summary').message };
      return Promise.resolve(false);
    }
    return this.#control(token, 'handback', body.data);
  }

  /** The last failure of these commands, if any. */
  failureOf(...commands: ControlCommand[]): string | null {
    return this.failure && commands.includes(this.failure.command) ? this.failure.message : null;
  }

  dismissPending(approvalId: string): void {
    this.pending = this.pending.filter((p) => p.approvalId !== approvalId);
  }

  /** `POST …/needs-operator/dismiss`: an operator has seen the agent's request. */
  dismissNeedsOperator(token: string): Promise<boolean> {
    return this.#run('dismiss', () => api(runPath(this.#detail.runId, '/needs-operator/dismiss'), { token, method: 'POST', body: {}, schema: runSchema }));
  }

  #control(token: string, command: ControlCommand, body: ControlBody): Promise<boolean> {
    return this.#run(command, () => api(runPath(this.#detail.runId, '/control'), { token, method: 'POST', body, schema: runSchema }));
  }

  async #run(command: ControlCommand, call: () => Promise<Run>): Promise<boolean> {
    if (this.busy) return false;
    this.busy = command;
    this.failure = null;
    try {
      this.#detail.accept(await call());
      return true;
    } catch (error) {
      const approvalId = pendingApprovalId(error);
      if (approvalId) this.pending = [...this.pending.filter((p) => p.command !== command), { command, approvalId }];
      else this.failure = { command, message: errorMessage(error) };
      return false;
    } finally {
      this.busy = null;
    }
  }
}
