import { type ControlBody, type PauseMode, type Run, runSchema } from '@handoff/shared';
import { api, errorMessage, runPath } from './api.js';
import type { RunDetail } from './run-detail.svelte.js';

/** What the control panel is doing right now. */
export type ControlCommand = 'pause-soft' | 'pause-hard' | 'resume' | 'dismiss';

/**
 * The operator's commands on a run: pause/resume (`POST …/control`) and dismissing a
 * needs-operator flag. Answers update the run; whether the worker applied a change
 * arrives later, pushed (`control.appliedSeq`).
 */
export class RunControl {
  /** The command in flight, if any (one at a time). */
  busy = $state<ControlCommand | null>(null);
  /** The last command's failure, shown next to the button that sent it. */
  failure = $state<{ command: ControlCommand; message: string } | null>(null);

  readonly #detail: RunDetail;

  constructor(detail: RunDetail) {
    this.#detail = detail;
  }

  pause(token: string, mode: PauseMode): Promise<void> {
    return this.#control(token, mode === 'hard' ? 'pause-hard' : 'pause-soft', { action: 'pause', mode });
  }

  resume(token: string): Promise<void> {
    return this.#control(token, 'resume', { action: 'resume' });
  }

  /** The last failure of these commands, if any. */
  failureOf(...commands: ControlCommand[]): string | null {
    return this.failure && commands.includes(this.failure.command) ? this.failure.message : null;
  }

  /** `POST …/needs-operator/dismiss`: an operator has seen the agent's request. */
  dismissNeedsOperator(token: string): Promise<void> {
    return this.#run('dismiss', () => api(runPath(this.#detail.runId, '/needs-operator/dismiss'), { token, method: 'POST', body: {}, schema: runSchema }));
  }

  #control(token: string, command: ControlCommand, body: ControlBody): Promise<void> {
    return this.#run(command, () => api(runPath(this.#detail.runId, '/control'), { token, method: 'POST', body, schema: runSchema }));
  }

  async #run(command: ControlCommand, call: () => Promise<Run>): Promise<void> {
    if (this.busy) return;
    this.busy = command;
    this.failure = null;
    try {
      this.#detail.accept(await call());
    } catch (error) {
      this.failure = { command, message: errorMessage(error) };
    } finally {
      this.busy = null;
    }
  }
}
