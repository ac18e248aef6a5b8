import { systemClock, type Ack, type Clock, type EventResponse, type TimerHandle, type WorkerClientEvents, type WorkerToHub } from '@handoff/shared';
import type { Logger } from './logger.js';

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

/**
 * Refusals that say the run moved on — cancelled, ended, given to another worker — and the
 * report with it: expected whenever a run ends with reports in flight, so a warning, not an
 * error. Any other refusal (a report the hub cannot read) is the worker's fault: an error.
 */
const MOVED_ON_CODES: ReadonlySet<string> = new Set(['FORBIDDEN', 'NOT_FOUND', 'STATE_CONFLICT']);

/**
 * Reads the hub's answer to a report: `done` when taken, or refused for good (logged);
 * otherwise `backoff` — and, while the link is up, `onRetry` is asked to schedule a retry
 * (when the connection dropped, the reconnect's resend covers it).
 */
export function judgeAck(ack: Ack<unknown> | undefined, event: string, link: HubLink, log: Logger, onRetry: () => void): 'done' | 'backoff' {
  if (ack?.ok) return 'done';
  if (ack && !RETRYABLE_CODES.has(ack.error.code)) {
    const level = MOVED_ON_CODES.has(ack.error.code) ? 'warn' : 'error';
    log[level]({ event, error: { code: ack.error.code, message: ack.error.message } }, 'hub refused a report');
    return 'done';
  }
  if (link.ready) {
    log.warn({ event, error: ack ? { code: ack.error.code, message: ack.error.message } : 'no answer' }, 'report not acknowledged; will retry');
    onRetry();
  }
  return 'backoff';
}

/** At most one pending retry: `schedule()` while one is pending does nothing. */
export class RetryTimer {
  private timer: TimerHandle | null = null;

  constructor(
    private readonly ms: number,
    private readonly fire: () => void,
    private readonly clock: Clock = systemClock,
  ) {}

  schedule(): void {
    if (this.timer) return;
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.fire();
    }, this.ms);
  }

  clear(): void {
    this.timer?.cancel();
    this.timer = null;
  }
}
