import { type LiveSession, type Run, runSchema, type WriteGrant } from '@handoff/shared';
import { api, errorMessage, runPath } from './api.js';
import type { HubConnection } from './hub.svelte.js';
import { isNewer, newestById } from './revisions.js';

/**
 * One run, kept current by the `run:<id>` room (`run:updated`, `session:updated`,
 * `grant:updated`, `run:needs-operator`).
 */
export class RunDetail {
  run = $state<Run | null>(null);
  /**
   * Every write grant of the run seen since the page opened, by id, live or ended. An
   * ended grant stays ended: a snapshot read before it ended never brings it back.
   * `run.writeGrants` holds only the live ones.
   */
  grants = $state<Record<string, WriteGrant>>({});
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
      if (run.id === this.runId) this.#setRun(run);
    });
    const offGrant = hub.on('grant:updated', (grant) => {
      if (grant.runId === this.runId) this.applyGrant(grant);
    });
    const offSession = hub.on('session:updated', (session) => {
      if (session.runId === this.runId) this.#applySession(session);
    });
    // The flag also comes with the run:updated that follows; this one shows it a moment sooner.
    const offNeedsOperator = hub.on('run:needs-operator', ({ runId, reason, at }) => {
      if (runId === this.runId && this.run) this.run.needsOperator = { reason, at };
    });
    const unregister = hub.whileConnected(() => {
      hub.request('run:subscribe', { runId: this.runId }).then(
        ({ run }) => {
          this.#setRun(run);
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
      offGrant();
      offNeedsOperator();
      unregister();
      // Best effort: a missed unsubscribe only costs events this page no longer listens to.
      if (hub.connected) hub.request('run:unsubscribe', { runId: this.runId }).catch(() => undefined);
    };
  }

  /**
   * Takes a run a command answered with. The same state is also pushed to the room, and
   * a push may already have overtaken it (e.g. the worker's `applied`): an older revision is dropped.
   */
  accept(run: Run): void {
    this.#setRun(run);
  }

  /**
   * Takes a write grant as pushed (`grant:updated`) or as a command answered it: a live
   * one is listed in `run.writeGrants`, an ended one leaves it for good.
   */
  applyGrant(grant: WriteGrant): void {
    const known = this.#remember(grant);
    if (!this.run) return;
    const index = this.run.writeGrants.findIndex((g) => g.id === grant.id);
    if (known.status !== 'active') {
      if (index !== -1) this.run.writeGrants.splice(index, 1);
    } else if (index === -1) this.run.writeGrants.push(known);
    else this.run.writeGrants[index] = known;
  }

  /**
   * Shows `run` unless a newer revision is shown already. Its sessions and grants were read
   * a moment after the run itself, and a `session:updated` / `grant:updated` may have
   * brought a newer one meanwhile: per id, the newer revision wins.
   */
  #setRun(run: Run): void {
    if (this.run && !isNewer(run, this.run)) return;
    const live = run.writeGrants.map((g) => this.#remember(g)).filter((g) => g.status === 'active');
    this.run = { ...run, sessions: newestById(run.sessions, this.run?.sessions ?? []), writeGrants: live };
  }

  /** Records a grant unless a newer revision of it is known (an ended grant stays ended); returns what is known now. */
  #remember(grant: WriteGrant): WriteGrant {
    const known = this.grants[grant.id];
    if (known && !isNewer(grant, known)) return known;
    this.grants[grant.id] = grant;
    return grant;
  }

  /** `POST /api/task-runs/:id/cancel`. */
  async cancel(token: string): Promise<void> {
    this.cancelling = true;
    this.actionError = null;
    try {
      this.accept(await api(runPath(this.runId, '/cancel'), { token, method: 'POST', body: {}, schema: runSchema }));
    } catch (error) {
      this.actionError = errorMessage(error);
    } finally {
      this.cancelling = false;
    }
  }

  /**
   * Lists a session a command answered with, unless the room already pushed it: pushes
   * are ordered, answers are not, so a known session is only ever updated by a push.
   */
  addSession(session: LiveSession): void {
    if (this.run && !this.run.sessions.some((s) => s.id === session.id)) this.run.sessions.push(session);
  }

  #applySession(session: LiveSession): void {
    if (!this.run) return;
    const index = this.run.sessions.findIndex((s) => s.id === session.id);
    if (index === -1) this.run.sessions.push(session);
    else if (isNewer(session, this.run.sessions[index])) this.run.sessions[index] = session;
  }
}
