import { type OperatorMessage, operatorMessageBodySchema, operatorMessageListSchema, operatorMessageSchema, validationError } from '@handoff/shared';
import { api, errorMessage, runPath } from './api.js';
import { mergeById, upsertById } from './by-id.js';
import type { HubConnection } from './hub.svelte.js';

const byTime = (a: OperatorMessage, b: OperatorMessage) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id);

/**
 * A run's operator messages: `GET …/operator-messages` on every (re)connect, then live
 * `message:created` and `message:updated` (the worker acknowledged it: `deliveredAt`),
 * merged by id — nothing is polled.
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
  #loading = false;
  #loadAgain = false;
  #stopped = false;

  constructor(runId: string) {
    this.runId = runId;
  }

  /**
   * Reads the list on every (re)connect and follows the run room's pushes (the room is
   * joined by RunDetail). Returns a stop function.
   */
  follow(hub: HubConnection, token: string): () => void {
    this.#token = token;
    this.#stopped = false;
    const offCreated = hub.on('message:created', (message) => {
      if (message.runId === this.runId) this.#add(message);
    });
    const offUpdated = hub.on('message:updated', (message) => {
      if (message.runId === this.runId) this.#add(message);
    });
    const unregister = hub.whileConnected(() => void this.load());
    return () => {
      this.#stopped = true;
      offCreated();
      offUpdated();
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

  /** Lists a message once; a delivered copy replaces an undelivered one, never the reverse (pushes may cross). */
  #add(message: OperatorMessage): void {
    const known = this.messages.find((m) => m.id === message.id);
    if (known?.deliveredAt && !message.deliveredAt) return;
    upsertById(this.messages, message);
    this.messages.sort(byTime);
  }
}
