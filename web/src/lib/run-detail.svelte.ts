import { type LiveSession, type Run, runSchema } from '@handoff/shared';
import { api, errorMessage } from './api.js';
import type { HubConnection } from './hub.svelte.js';

/** One run, kept current by the `run:<id>` room (`run:updated`, `session:updated`). */
export class RunDetail {
  run = $state<Run | null>(null);
  /** Why the run could not be loaded (e.g. NOT_FOUND). */
  error = $state<string | null>(null);
  /** Why the last action (cancel) failed. */
  actionError = $state<string | null>(null);
  cancelling = $state(false);

  readonly runId: string;

  constructor(runId: string) {
    this.runId = runId;
  }

  /** Subscribes now and after every reconnect; returns a stop function that unsubscribes. */
  follow(hub: HubConnection): () => void {
    const offRun = hub.on('run:updated', (run) => {
      if (run.id === this.runId) this.run = run;
    });
    const offSession = hub.on('session:updated', (session) => {
      if (session.runId === this.runId) this.#applySession(session);
    });
    const unregister = hub.whileConnected(() => {
      hub.request('run:subscribe', { runId: this.runId }).then(
        ({ run }) => {
          this.run = run;
          this.error = null;
        },
        (error: unknown) => {
          this.error = errorMessage(error);
        },
      );
    });
    return () => {
      offRun();
      offSession();
      unregister();
      // Best effort: a missed unsubscribe only costs events this page no longer listens to.
      if (hub.connected) hub.request('run:unsubscribe', { runId: this.runId }).catch(() => undefined);
    };
  }

  /** `POST /api/task-runs/:id/cancel`. */
  async cancel(token: string): Promise<void> {
    this.cancelling = true;
    this.actionError = null;
    try {
      this.run = await api(`/task-runs/${encodeURIComponent(this.runId)}/cancel`, {
        token,
        method: 'POST',
        body: {},
        schema: runSchema,
      });
    } catch (error) {
      this.actionError = errorMessage(error);
    } finally {
      this.cancelling = false;
    }
  }

  #applySession(session: LiveSession): void {
    if (!this.run) return;
    const index = this.run.sessions.findIndex((s) => s.id === session.id);
    if (index === -1) this.run.sessions.push(session);
    else this.run.sessions[index] = session;
  }
}
