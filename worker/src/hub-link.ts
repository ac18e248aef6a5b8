import type { Ack, EventResponse, WorkerClientEvents, WorkerToHub } from '@handoff/shared';

export type ReportEvent = keyof WorkerToHub;
export type PayloadOf<E extends ReportEvent> = Parameters<WorkerToHub[E]>[0];
export type ResponseOf<E extends ReportEvent> = EventResponse<WorkerClientEvents, E>;

/** The worker's connection as its runs see it. */
export interface HubLink {
  /** True while connected and greeted (the hub acknowledged `worker:hello`). */
  readonly ready: boolean;
  /**
   * Emits an event and reports the hub's ack; `undefined` when no ack came (timeout or
   * disconnect). Only call while `ready`.
   */
  send<E extends ReportEvent>(event: E, payload: PayloadOf<E>, onAck: (ack: Ack<ResponseOf<E>> | undefined) => void): void;
}

/** Error codes after which sending the same thing again may succeed. */
export const RETRYABLE_CODES: ReadonlySet<string> = new Set(['UNAVAILABLE', 'INTERNAL', 'RATE_LIMITED']);
