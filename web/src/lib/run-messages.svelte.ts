import { type OperatorMessage, operatorMessageBodySchema, operatorMessageListSchema, operatorMessageSchema, validationError } from '@handoff/shared';
import { api, errorMessage, runPath } from './api.js';
import { mergeById, upsertById } from './by-id.js';
import type { HubConnection } from './hub.svelte.js';

/** After a message is created, re-read the list this long later to pick up its delivery, in ms. */
const DELIVERY_CHECK_MS = 1000;
/** While a message stays undelivered, re-read the list with this backoff, in ms (first, cap). */
const RECHECK_MIN_MS = 5000;
const RECHECK_MAX_MS = 60_000;
/** A burst of run updates causes one re-read, this long after the last, in ms. */
const RUN_UPDATE_DEBOUNCE_MS = 300;

const byTime = (a: OperatorMessage, b: OperatorMessage) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id);

/**
 * A run's operator messages: `GET …/operator-messages`, then live `message:created`
 * (deduped by id). The hub pushes no event when the worker acknowledges a message, so
 * `deliveredAt` is caught by re-reading the list when a message is created or the run
 * changes, and — only while one is still undelivered — with a backoff from 5 s.
 */
export class RunMessages {
  messages = $state<OperatorMessage[]>([]);
  /** Why the list could not be read. */
  error = $state<string | null>(null);
  sending = $state(false);
  /** Why the last send failed. */
  sendError = $state<string | null>(null);

  readonly runId: string;
  #token = '';
  #timer: ReturnType<typeof setTimeout> | undefined;
  #recheckMs = RECHECK_MIN_MS;
  #loading = false;
  #loadAgain = false;
  #stopped = false;
  #runActive: () => boolean = () => false;

  constructor(runId: string) {
    this.runId = runId;
  }

  /**
   * Reads the list on every (re)connect and follows the run room's pushes (the room is
   * joined by RunDetail). `runActive` says whether the agent can still receive messages.
   * Returns a stop function.
   */
  follow(hub: HubConnection, token: string, runActive: () => boolean): () => void {
    this.#token = token;
    this.#runActive = runActive;
    this.#stopped = false;
    const offCreated = hub.on('message:created', (message) => {
      if (message.runId === this.runId) this.#add(message);
    });
    const offRun = hub.on('run:updated', (run) => {
      if (run.id === this.runId) this.#schedule(RUN_UPDATE_DEBOUNCE_MS);
    });
    const unregister = hub.whileConnected(() => void this.load());
    return () => {
      this.#stopped = true;
      clearTimeout(this.#timer);
      offCreated();
      offRun();
      unregister();
    };
  }

  /** Re-reads the list (one read at a time; a request during a read reads once more after it). */
  async load(): Promise<void> {
    if (this.#loading) {
      this.#loadAgain = true;
      return;
    }
    this.#loading = true;
    try {
      const { messages } = await api(runPath(this.runId, '/operator-messages'), { token: this.#token, schema: operatorMessageListSchema });
      if (this.#stopped) return;
      this.messages = mergeById(this.messages, messages, byTime);
      this.error = null;
    } catch (error) {
      this.error = errorMessage(error);
    } finally {
      this.#loading = false;
    }
    if (this.#loadAgain) {
      this.#loadAgain = false;
      return this.load();
    }
    this.#scheduleRecheck();
  }

  /** `POST …/operator-messages`. Resolves to whether the message was accepted (the composer then clears). */
  async send(text: string): Promise<boolean> {
    const body = operatorMessageBodySchema.safeParse({ message: text });
    if (!body.success) {
      this.sendError = validationError(body.error, 'message').message;
      return false;
    }
    this.sending = true;
    this.sendError = null;
    try {
      const message = await api(runPath(this.runId, '/operator-messages'), { token: this.#token, method: 'POST', body: body.data, schema: operatorMessageSchema });
      // The push may have come first; either way the message is listed once.
      this.#add(message);
      return true;
    } catch (error) {
      this.sendError = errorMessage(error);
      return false;
    } finally {
      this.sending = false;
    }
  }

  /** Lists a new message once and checks for its delivery shortly. */
  #add(message: OperatorMessage): void {
    upsertById(this.messages, message);
    this.messages.sort(byTime);
    this.#recheckMs = RECHECK_MIN_MS;
    this.#schedule(DELIVERY_CHECK_MS);
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.load();
    }, ms);
  }

  #scheduleRecheck(): void {
    // A sooner read is already due.
    if (this.#stopped || this.#timer !== undefined) return;
    const undelivered = this.messages.some((m) => m.deliveredAt === null);
    if (!undelivered || !this.#runActive()) return;
    this.#schedule(this.#recheckMs);
    this.#recheckMs = Math.min(this.#recheckMs * 2, RECHECK_MAX_MS);
  }
}
