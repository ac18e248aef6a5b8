import type { Ack, ErrorBody } from '@handoff/shared';
import { RETRYABLE_CODES, type HubLink, type PayloadOf } from './hub-link.js';
import type { Logger } from './logger.js';

/** The one-off reports of a run besides its output: control changes that took hold, and requests for an operator. */
export type RunEventReport =
  | { event: 'control:applied'; payload: PayloadOf<'control:applied'> }
  | { event: 'run:needs-operator'; payload: PayloadOf<'run:needs-operator'> };

export interface ReportQueueOptions {
  link: HubLink;
  logger: Logger;
  /** Whether reports may go out now (the run reporter holds them until the hub knows the run started). Default: always. */
  canSend?: () => boolean;
  /** Everything queued was taken (or refused for good). */
  onDrained?: () => void;
  /** Delay before retrying after a timeout or a transient refusal, in ms. Default 2000. */
  retryMs?: number;
}

/**
 * Delivers discrete reports to the hub one at a time, in order, and sends the oldest
 * unacknowledged one again after a reconnect (or a transient refusal) until the hub takes
 * it — like the share reporter. A report not sent yet is replaced by a newer one of the
 * same event: the hub only needs the newest control state that took hold (seqs only grow)
 * and the agent's latest reason, and a chatty agent cannot flood it.
 */
export class ReportQueue {
  private readonly link: HubLink;
  private readonly log: Logger;
  private readonly canSend: () => boolean;
  private readonly onDrained: () => void;
  private readonly retryMs: number;
  private readonly queue: RunEventReport[] = [];
  private inFlight = false;
  /** Bumped on every resend: an answer to an older round's emit is ignored. */
  private round = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private disposed = false;

  constructor(opts: ReportQueueOptions) {
    this.link = opts.link;
    this.log = opts.logger;
    this.canSend = opts.canSend ?? (() => true);
    this.onDrained = opts.onDrained ?? (() => undefined);
    this.retryMs = opts.retryMs ?? 2000;
  }

  /** Nothing waits to be sent or answered. */
  get empty(): boolean {
    return this.queue.length === 0;
  }

  push(report: RunEventReport): void {
    if (this.disposed) return;
    const keep = this.inFlight ? 1 : 0; // the one in flight may already be taken: it stays
    const stale = this.queue.findIndex((r, i) => i >= keep && r.event === report.event);
    if (stale !== -1) this.queue.splice(stale, 1);
    this.queue.push(report);
    this.pump();
  }

  /** After a (re)connect, or to retry: send the oldest unacknowledged report again. */
  resend(): void {
    this.round += 1;
    this.inFlight = false;
    this.clearRetry();
    // The unanswered report is sent again unless a newer one of its event replaces it.
    const head = this.queue[0];
    if (head && this.queue.some((r, i) => i > 0 && r.event === head.event)) this.queue.shift();
    this.pump();
  }

  dispose(): void {
    this.disposed = true;
    this.queue.length = 0;
    this.clearRetry();
  }

  /** Sends the next report if none is in flight and the link and the owner allow it. */
  pump(): void {
    if (this.disposed || this.inFlight || !this.link.ready || !this.canSend()) return;
    const next = this.queue[0];
    if (!next) return;
    this.inFlight = true;
    const round = this.round;
    const onAck = (ack: Ack<unknown> | undefined) => {
      if (round !== this.round || this.disposed) return;
      this.inFlight = false;
      if (ack?.ok || (ack && !RETRYABLE_CODES.has(ack.error.code))) {
        if (ack && !ack.ok) this.log.error({ event: next.event, error: errorFields(ack.error) }, 'hub refused a report');
        this.queue.shift();
        if (this.queue.length === 0) this.onDrained();
        this.pump();
        return;
      }
      // Dropped connection: the reconnect's resend covers it.
      if (this.link.ready) {
        this.log.warn({ event: next.event, error: ack ? errorFields(ack.error) : 'no answer' }, 'report not acknowledged; will retry');
        this.scheduleRetry();
      }
    };
    if (next.event === 'control:applied') this.link.send('control:applied', next.payload, onAck);
    else this.link.send('run:needs-operator', next.payload, onAck);
  }

  private scheduleRetry(): void {
    if (this.retryTimer || this.disposed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.resend();
    }, this.retryMs);
  }

  private clearRetry(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }
}

function errorFields(error: ErrorBody): { code: string; message: string } {
  return { code: error.code, message: error.message };
}
