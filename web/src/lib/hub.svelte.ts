import {
  type Ack,
  type DashboardClientEvents,
  type DashboardToHub,
  type HubToDashboard,
  dashboardClientEvents,
  dashboardServerEvents,
  NAMESPACE,
} from '@handoff/shared';
import { io, type Socket } from 'socket.io-client';
import type { z } from 'zod';
import { ApiError } from './api.js';

export type HubStatus = 'offline' | 'connecting' | 'connected' | 'reconnecting' | 'refused';
export type RequestName = keyof DashboardClientEvents;
export type RequestPayload<K extends RequestName> = z.input<DashboardClientEvents[K]['payload']>;
export type RequestResult<K extends RequestName> = z.output<DashboardClientEvents[K]['response']>;
export type PushName = keyof HubToDashboard;
export type PushPayload<E extends PushName> = Parameters<HubToDashboard[E]>[0];

/** How long a request waits for its ack, in ms. */
const REQUEST_TIMEOUT_MS = 10_000;
/** Retry delay after the hub refused the handshake or closed the socket itself, in ms. */
const RETRY_AFTER_MS = 5_000;

/**
 * The dashboard's one socket to the hub (`/dashboard`, websocket only). Requests
 * are acked and parsed with the shared schemas; `whileConnected` callbacks run on
 * every (re)connect, which is how subscriptions survive a reconnect.
 */
export class HubConnection {
  status = $state<HubStatus>('offline');
  /** The last connection error, shown next to the status. */
  error = $state<string | null>(null);

  #socket: Socket<HubToDashboard, DashboardToHub> | null = null;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #onConnect = new Set<() => void>();
  readonly #listeners = new Map<PushName, Set<(payload: never) => void>>();

  get connected(): boolean {
    return this.status === 'connected';
  }

  open(token: string): void {
    this.close();
    const socket: Socket<HubToDashboard, DashboardToHub> = io(NAMESPACE.dashboard, {
      transports: ['websocket'],
      auth: { token },
    });
    this.#socket = socket;
    this.status = 'connecting';
    socket.on('connect', () => {
      this.status = 'connected';
      this.error = null;
      for (const fn of [...this.#onConnect]) fn();
    });
    socket.on('disconnect', (reason) => {
      if (socket.active) {
        this.status = 'reconnecting';
      } else if (reason === 'io server disconnect') {
        this.error = 'the hub closed the connection';
        this.#retry(socket);
      }
    });
    socket.on('connect_error', (error) => {
      this.error = error.message;
      // socket.io does not retry a handshake the hub's middleware refused (e.g. a revoked token).
      if (!socket.active) this.#retry(socket);
      else if (this.status !== 'connecting') this.status = 'reconnecting';
    });
    for (const event of Object.keys(dashboardServerEvents) as PushName[]) {
      socket.on(event, (payload: unknown) => this.#dispatch(event, payload));
    }
  }

  close(): void {
    clearTimeout(this.#retryTimer);
    this.#socket?.disconnect();
    this.#socket = null;
    this.status = 'offline';
    this.error = null;
  }

  /** Runs `fn` now if connected and again after every reconnect. Returns an unregister function. */
  whileConnected(fn: () => void): () => void {
    this.#onConnect.add(fn);
    if (this.connected) fn();
    return () => this.#onConnect.delete(fn);
  }

  /** Listens to a hub push; payloads failing the shared schema are dropped. Returns an off function. */
  on<E extends PushName>(event: E, handler: (payload: PushPayload<E>) => void): () => void {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(handler);
    return () => set.delete(handler);
  }

  /** Emits a client event and resolves to its ack's data, or rejects with ApiError. */
  request<K extends RequestName>(event: K, payload: RequestPayload<K>): Promise<RequestResult<K>> {
    const socket = this.#socket;
    if (!socket) return Promise.reject(new ApiError('UNAVAILABLE', 'not connected to the hub'));
    const schema: z.ZodType = dashboardClientEvents[event].response;
    return new Promise((resolve, reject) => {
      // socket.io's typed emit cannot follow a generic event key; the shared
      // response schema re-establishes the type of the answer.
      (socket as unknown as Socket)
        .timeout(REQUEST_TIMEOUT_MS)
        .emit(event, payload, (timeout: Error | null, ack: Ack<unknown>) => {
          if (timeout) return reject(new ApiError('UNAVAILABLE', `${event}: no answer from the hub`));
          if (!ack.ok) return reject(new ApiError(ack.error.code, ack.error.message, 0, ack.error.details));
          const data = schema.safeParse(ack.data);
          if (data.success) resolve(data.data as RequestResult<K>);
          else reject(new ApiError('INTERNAL', `${event}: unexpected answer from the hub`));
        });
    });
  }

  #dispatch(event: PushName, raw: unknown): void {
    const handlers = this.#listeners.get(event);
    if (!handlers?.size) return;
    const parsed = dashboardServerEvents[event].payload.safeParse(raw);
    if (!parsed.success) {
      console.error(`hub sent a malformed ${event}`, parsed.error.issues);
      return;
    }
    for (const handler of [...handlers]) handler(parsed.data as never);
  }

  #retry(socket: Socket): void {
    this.status = 'refused';
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      if (this.#socket === socket) {
        this.status = 'connecting';
        socket.connect();
      }
    }, RETRY_AFTER_MS);
  }
}

export const hub = new HubConnection();
