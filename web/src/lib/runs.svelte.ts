import { type LiveSession, type Run, type RunList, runListSchema } from '@handoff/shared';
import { api, errorMessage } from './api.js';
import type { HubConnection } from './hub.svelte.js';
import { newestById } from './revisions.js';
import { attentionFirst, filterParams, matchesFilters, NO_FILTERS, type RunFilters } from './run-filters.js';

/** Page size of `GET /api/task-runs`. */
const PAGE_SIZE = 50;
/** Most runs asking for an operator read at once (they are few; the hub reads them through their own index). */
const FLAGGED_MAX = 200;

/**
 * The live run list: one REST page (or more) matching the filters, plus every run asking for an
 * operator whatever the filters (the header's count and the notifications need them all, and
 * the list shows the matching ones first). Kept current by `run:updated` and `run:needs-operator`.
 */
export class RunsStore {
  /** The loaded pages matching `filters`, newest first. */
  runs = $state<Run[]>([]);
  /** Every run whose agent asked for an operator, filtered or not. */
  flagged = $state<Run[]>([]);
  filters = $state<RunFilters>({ ...NO_FILTERS });
  loading = $state(false);
  /** The flagged runs were read at least once (until then, none flagged means "not known yet"). */
  loaded = $state(false);
  error = $state<string | null>(null);
  nextCursor = $state<string | null>(null);

  #token = '';
  /** Runs updated live while a page load was in flight: the push is newer than the page. */
  readonly #updatedDuringLoad = new Set<string>();
  /** The newest revision applied per run id (pushes from several nodes can overtake each other). */
  readonly #revisions = new Map<string, number>();
  /** Bumped by every reload: an answer for older filters is dropped. */
  #generation = 0;

  /** What the list shows: runs asking for an operator first (the longest waiting on top), then the page. */
  get visible(): Run[] {
    const asking = this.flagged.filter((r) => matchesFilters(r, this.filters));
    const ids = new Set(asking.map((r) => r.id));
    return attentionFirst([...asking, ...this.runs.filter((r) => !ids.has(r.id))]);
  }

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
      const run = this.runs.find((r) => r.id === runId) ?? this.flagged.find((r) => r.id === runId);
      if (run) this.apply({ ...run, needsOperator: { reason, at } }, { force: true });
    });
    const offSession = hub.on('session:updated', (session) => this.#applySession(session));
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
      offSession();
      unregister();
      this.#generation++;
      this.runs = [];
      this.flagged = [];
      this.#revisions.clear();
      this.loaded = false;
      this.nextCursor = null;
      this.error = null;
    };
  }

  /** Narrows the list: reloads the first page for the new filters. */
  setFilters(filters: RunFilters): Promise<void> {
    this.filters = filters;
    return this.reload();
  }

  /**
   * A run as pushed (or just created): joins, updates or leaves the list by the filters, and
   * the flagged set by its needs-operator flag — unless what is shown is newer.
   * `force`: the change is known to be newer although its revision is not bumped yet.
   */
  apply(run: Run, opts: { force?: boolean } = {}): void {
    if (this.loading) this.#updatedDuringLoad.add(run.id);
    // A run may have left both lists (flag cleared, filtered out): the newest revision seen
    // still decides, or an older push overtaken on the way would bring the flag back.
    const seen = this.#revisions.get(run.id);
    if (!opts.force && seen !== undefined && run.revision <= seen) return;
    this.#revisions.set(run.id, Math.max(run.revision, seen ?? 0));
    const flaggedAt = this.flagged.findIndex((r) => r.id === run.id);
    if (run.needsOperator === null) {
      if (flaggedAt !== -1) this.flagged.splice(flaggedAt, 1);
    } else if (flaggedAt === -1) this.flagged.push(run);
    else this.flagged[flaggedAt] = run;
    const index = this.runs.findIndex((r) => r.id === run.id);
    const belongs = matchesFilters(run, this.filters);
    if (index === -1) {
      if (belongs) this.runs.unshift(run);
    } else if (belongs) this.runs[index] = run;
    else this.runs.splice(index, 1);
  }

  /** A share changed (extended, revoked, expired, ready): the run's badges follow; a share filter may drop the run. */
  #applySession(session: LiveSession): void {
    for (const list of [this.runs, this.flagged]) {
      const run = list.find((r) => r.id === session.runId);
      if (!run) continue;
      const at = run.sessions.findIndex((s) => s.id === session.id);
      if (at === -1) run.sessions.push(session);
      else if (session.revision > run.sessions[at]!.revision) run.sessions[at] = session;
    }
    const index = this.runs.findIndex((r) => r.id === session.runId);
    if (index !== -1 && !matchesFilters(this.runs[index]!, this.filters)) this.runs.splice(index, 1);
  }

  /** Replaces the list with the first page for the current filters, and re-reads the flagged runs. */
  async reload(): Promise<void> {
    const generation = ++this.#generation;
    this.loading = true;
    this.#updatedDuringLoad.clear();
    const filters = this.filters;
    try {
      const [page, flagged] = await Promise.all([this.#fetch(filters, null), this.#fetchFlagged()]);
      if (generation !== this.#generation) return;
      const live = this.runs.filter((r) => this.#updatedDuringLoad.has(r.id) && matchesFilters(r, filters));
      // A run pushed while the page loaded may be newer than the page's copy, or older.
      const fresh = newestById(page.runs, this.runs);
      const extra = live.filter((r) => !fresh.some((f) => f.id === r.id));
      this.runs = [...extra, ...fresh];
      this.nextCursor = page.nextCursor;
      this.flagged = newestById(flagged.runs, this.flagged).filter((r) => r.needsOperator !== null);
      for (const r of [...this.runs, ...this.flagged]) this.#revisions.set(r.id, Math.max(r.revision, this.#revisions.get(r.id) ?? 0));
      this.loaded = true;
      this.error = null;
    } catch (error) {
      if (generation === this.#generation) this.error = errorMessage(error);
    } finally {
      if (generation === this.#generation) this.loading = false;
    }
  }

  /** Appends the next page. */
  async loadMore(): Promise<void> {
    if (!this.nextCursor || this.loading) return;
    const generation = this.#generation;
    this.loading = true;
    try {
      const page = await this.#fetch(this.filters, this.nextCursor);
      if (generation !== this.#generation) return;
      const known = new Set(this.runs.map((r) => r.id));
      const added = page.runs.filter((r) => !known.has(r.id) && (this.#revisions.get(r.id) ?? 0) <= r.revision);
      for (const r of added) this.#revisions.set(r.id, r.revision);
      this.runs.push(...added);
      this.nextCursor = page.nextCursor;
    } catch (error) {
      this.error = errorMessage(error);
    } finally {
      if (generation === this.#generation) this.loading = false;
    }
  }

  #fetch(filters: RunFilters, cursor: string | null): Promise<RunList> {
    const query = new URLSearchParams({ ...filterParams(filters), limit: String(PAGE_SIZE) });
    if (cursor) query.set('cursor', cursor);
    return api(`/task-runs?${query}`, { token: this.#token, schema: runListSchema });
  }

  #fetchFlagged(): Promise<RunList> {
    const query = new URLSearchParams({ needsOperator: 'true', limit: String(FLAGGED_MAX) });
    return api(`/task-runs?${query}`, { token: this.#token, schema: runListSchema });
  }
}
