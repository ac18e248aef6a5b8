import { type AuditEvent, type AuditEventPage, type AuditHead, auditEventPageSchema, type VerifyResponse, verifyResponseSchema } from '@handoff/shared';
import { api, errorMessage, runPath } from './api.js';
import type { HubConnection } from './hub.svelte.js';

/** Rows fetched per request (the API's maximum). */
const PAGE = 1000;
/** Re-reads after the last push settle this long, ms: a takeover's burst of pushes costs one fetch. */
const PUSH_DEBOUNCE_MS = 150;
/**
 * Fallback re-read while the timeline is open, ms. Some rows come with no push to the run
 * room (a refused keystroke, a denied command, a revealed write link); they appear within this.
 */
const POLL_MS = 15_000;

/**
 * One run's audit timeline, appended live: every push to the run's room (`run:updated`,
 * `session:updated`, `grant:updated`, messages, needs-operator) means rows may have been
 * written, so the rows after the last known seq are read again. Only a dashboard showing
 * the timeline does this; the hub does nothing per viewer.
 */
export class TimelineStore {
  events = $state<AuditEvent[]>([]);
  /** Display names by actor id (accumulated over every page read). */
  actors = $state<Record<string, string>>({});
  /** By row seq: the recording frame current at the row's time. */
  frames = $state<Record<string, number>>({});
  head = $state<AuditHead | null>(null);
  verify = $state<VerifyResponse | null>(null);
  verifyError = $state<string | null>(null);
  observerView = $state(false);
  loading = $state(true);
  error = $state<string | null>(null);

  readonly runId: string;
  #token: string;
  #reading: Promise<void> | null = null;
  #again = false;

  constructor(runId: string, token: string) {
    this.runId = runId;
    this.#token = token;
  }

  get lastSeq(): number {
    return this.events.at(-1)?.seq ?? 0;
  }

  actorName = (e: AuditEvent): string => this.actors[e.actorId] ?? (e.actorType === 'agent' ? 'agent' : e.actorId);

  /** Reads and keeps the run's rows live; returns a stop function. */
  follow(hub: HubConnection): () => void {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const soon = () => {
      clearTimeout(timer);
      timer = setTimeout(() => void this.refresh(), PUSH_DEBOUNCE_MS);
    };
    const mine = (runId: string) => runId === this.runId && soon();
    const offs = [
      hub.on('run:updated', (run) => mine(run.id)),
      hub.on('session:updated', (s) => mine(s.runId)),
      hub.on('grant:updated', (g) => mine(g.runId)),
      hub.on('message:created', (m) => mine(m.runId)),
      hub.on('message:updated', (m) => mine(m.runId)),
      hub.on('run:needs-operator', (n) => mine(n.runId)),
      hub.on('session:grace', (g) => mine(g.runId)),
    ];
    // The run page joins the run's room too; joining twice is harmless, and leaving is the
    // run page's (it leaves when the page closes), so switching tabs never leaves the room.
    const unregister = hub.whileConnected(() => {
      hub.request('run:subscribe', { runId: this.runId }).catch(() => undefined);
      soon();
    });
    const poll = setInterval(() => void this.refresh(), POLL_MS);
    void this.refresh().then(() => this.runVerify());
    return () => {
      clearTimeout(timer);
      clearInterval(poll);
      for (const off of offs) off();
      unregister();
    };
  }

  /** Reads the rows after the last known one (all of them the first time); one read at a time. */
  refresh(): Promise<void> {
    if (this.#reading) {
      this.#again = true;
      return this.#reading;
    }
    this.#reading = (async () => {
      try {
        do {
          this.#again = false;
          await this.#readFrom(this.lastSeq);
        } while (this.#again);
        this.error = null;
      } catch (error) {
        this.error = errorMessage(error);
      } finally {
        this.loading = false;
        this.#reading = null;
      }
    })();
    return this.#reading;
  }

  async #readFrom(cursor: number): Promise<void> {
    for (let next: number | null = cursor; next !== null; ) {
      const page: AuditEventPage = await api(runPath(this.runId, `/events?limit=${PAGE}&cursor=${next}`), { token: this.#token, schema: auditEventPageSchema });
      const fresh = page.events.filter((e) => e.seq > this.lastSeq);
      if (fresh.length) this.events.push(...fresh);
      Object.assign(this.actors, page.actors);
      Object.assign(this.frames, page.frames);
      this.head = page.head;
      this.observerView = page.observerView;
      next = page.nextCursor;
    }
  }

  /** Asks the hub to recompute the run's chain (and compare it with its newest signed checkpoint). */
  async runVerify(): Promise<void> {
    try {
      this.verify = await api(runPath(this.runId, '/events/verify'), { token: this.#token, schema: verifyResponseSchema });
      this.verifyError = null;
    } catch (error) {
      this.verifyError = errorMessage(error);
    }
  }

  /** The export as the hub streams it (rows, then the signed head), as a file the browser saves. */
  async download(): Promise<void> {
    const res = await fetch(`/api${runPath(this.runId, '/events?format=jsonl')}`, { headers: { Authorization: `Bearer ${this.#token}` } });
    if (!res.ok) throw new Error(`the hub answered ${res.status} to the export`);
    saveBlob(await res.blob(), `run-${this.runId}-audit.jsonl`);
  }
}

/** Hands a blob to the browser as a download (the API needs the bearer token, so no plain link). */
export function saveBlob(blob: Blob, filename: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  // Revoked on the next turn: the download has started by then.
  setTimeout(() => URL.revokeObjectURL(url), 0);
}
