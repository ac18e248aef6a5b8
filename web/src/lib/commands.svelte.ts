import { errorMessage } from './api.js';

/**
 * A store whose commands run one at a time: which one is in flight (`busy`, e.g.
 * `extend:<id>`, for its button) and why the last one failed (`error`, shown in its panel).
 */
export class Commands {
  /** The command in flight, if any. */
  busy = $state<string | null>(null);
  /** Why the last command failed. */
  error = $state<string | null>(null);

  /** Runs `call` as `command` unless another command is in flight; a failure lands in `error`. */
  protected async run(command: string, call: () => Promise<unknown>): Promise<void> {
    if (this.busy) return;
    this.busy = command;
    this.error = null;
    try {
      await call();
    } catch (error) {
      this.error = errorMessage(error);
    } finally {
      this.busy = null;
    }
  }
}
