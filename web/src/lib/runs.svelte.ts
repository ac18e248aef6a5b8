import { type Run, runListSchema } from '@handoff/shared';
import { api, errorMessage } from './api.js';
import type { HubConnection } from './hub.svelte.js';
import { isNewer, newestById } from './revisions.js';

/** Page size of `GET /api/task-runs`. */
const PAGE_SIZE = 50;

/** The live run list: one REST page (or more), kept current by `run:updated` and `run:needs-operator`. */
export class RunsStore {
  runs = $state<Run[]>([]);
  loading = $state(false);
  error = $state<string | null>(null);
  nextCursor = $state<string | null>(null);

  #token = '';
  /** Runs updated live while a page load was in flight: the push is newer than the page. */
  readonly #updatedDuringLoad = new Set<string>();

  /**
   * Loads the first page and follows `run:updated`. The socket subscription is
   * made on every (re)connect, and a reconnect reloads the page to catch up on
   * what was pushed while offline. Returns a stop function that forgets the list.
   */
  follow(hub: HubConnection, token: string): () => void {
    this.#token = token;
    const off = hub.on('run:updated', (run) => this.apply(run));
    // The flag also comes with the run:updated that follows; this one shows it a moment sooner.
    const offNeedsOperator = hub.on('run:needs-operator', ({ runId, reason, at }) => {
      const run = this.runs.find((r) => r.id === runId);
      if (run) run.needsOperator = { reason, at };
    });
    let connects = 0;
    const unregister = hub.whileConnected(() => {
      hub.request('runs:subscribe', {}).catch((error: unknown) => {
        this.error = `live updates unavailable: ${errorMessage(error)}`;
      });
      if (connects++ > 0) void this.reload();
    });
    void this.reload();
    return () => {
      off();
      offNeedsOperator();
      unregister();
      this.runs = [];
      this.nextCursor = null;
      this.error = null;
    };
  }

  /** Inserts a new run at the top or replaces the one with its id, unless the list already shows a newer revision. */
  apply(run: Run): void {
    if (this.loading) this.#updatedDuringLoad.add(run.id);
    const index = this.runs.findIndex((r) => r.id === run.id);
    if (index === -1) this.runs.unshift(run);
    else if (isNewer(run, this.runs[index])) this.runs[index] = run;
  }

  /** Replaces the list with the first page. */
  async reload(): Promise<void> {
    const page = await this.#fetch(null);
    if (!page) return;
    const live = this.runs.filter((r) => this.#updatedDuringLoad.has(r.id));
    // A run pushed while the page loaded may be newer than the page's copy, or older.
    const fresh = newestById(page.runs, this.runs);
    const extra = live.filter((r) => !fresh.some((f) => f.id === r.id));
    this.runs = [...extra, ...fresh];
    this.nextCursor = page.nextCursor;
  }

  /** Appends the next page. */
  async loadMore(): Promise<void> {
    if (!this.nextCursor) return;
    const page = await this.#fetch(this.nextCursor);
    if (!page) return;
    const known = new Set(this.runs.map((r) => r.id));
    this.runs.push(...page.runs.filter((r) => !known.has(r.id)));
    this.nextCursor = page.nextCursor;
  }

  async #fetch(cursor: string | null) {
    this.loading = true;
    this.#updatedDuringLoad.clear();
    try {
      const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
      if (cursor) query.set('cursor', cursor);
      const page = await api(`/task-runs?${query}`, { token: this.#token, schema: runListSchema });
      this.error = null;
      return page;
    } catch (error) {
      this.error = errorMessage(error);
      return null;
    } finally {
      this.loading = false;
    }
  }
}
