import type { Ack, ErrorBody } from '@handoff/shared';
import { RETRYABLE_CODES, type HubLink, type PayloadOf } from './hub-link.js';
import type { Logger } from './logger.js';

export interface ShareReporterOptions {
  sessionId: string;
  link: HubLink;
  logger: Logger;
  /** Called once the hub has taken the `share:failed` report: nothing more will be said about the share. */
  onSettled: () => void;
  /** Delay before retrying after a timeout or a transient refusal, in ms. Default 2000. */
  retryMs?: number;
}

type Report =
  | { event: 'share:ready'; payload: PayloadOf<'share:ready'> }
  | { event: 'share:failed'; payload: PayloadOf<'share:failed'> };

/**
 * Delivers one share's reports to the hub, in order — `share:ready`, then maybe
 * `share:failed` — one at a time, and sends again whatever is unacknowledged after a
 * reconnect (or a transient refusal), like the run reporter does for runs.
 * Payloads carry RW attach data: nothing here ever logs one.
 */
export class ShareReporter {
  readonly sessionId: string;
  private readonly link: HubLink;
  private readonly log: Logger;
  private readonly onSettled: () => void;
  private readonly retryMs: number;
  private readonly queue: Report[] = [];
  private inFlight = false;
  /** Bumped on every resend: an answer to an older round's emit is ignored. */
  private round = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private disposed = false;
  private failedTaken = false;

  constructor(opts: ShareReporterOptions) {
    this.sessionId = opts.sessionId;
    this.link = opts.link;
    this.log = opts.logger;
    this.onSettled = opts.onSettled;
    this.retryMs = opts.retryMs ?? 2000;
  }

  /** Whether the hub has taken the final `share:failed` report. */
  get settled(): boolean {
    return this.failedTaken;
  }

  ready(attachRo: Record<string, string>, attachRw: Record<string, string>): void {
    this.enqueue({ event: 'share:ready', payload: { sessionId: this.sessionId, attachRo, attachRw } });
  }

  failed(message: string): void {
    // A ready report not sent yet is moot: the hub goes straight to ERROR.
    const keep = this.inFlight ? 1 : 0;
    this.queue.splice(keep, this.queue.length - keep, ...this.queue.slice(keep).filter((r) => r.event !== 'share:ready'));
    this.enqueue({ event: 'share:failed', payload: { sessionId: this.sessionId, message: message.slice(0, 2000) } });
  }

  /** After a (re)connect, or to retry: send the oldest unacknowledged report again. */
  resend(): void {
    this.round += 1;
    this.inFlight = false;
    this.clearRetry();
    this.pump();
  }

  /** Stops reporting (the share was stopped on purpose; whatever is pending is moot). */
  dispose(): void {
    this.disposed = true;
    this.queue.length = 0;
    this.clearRetry();
  }

  private enqueue(report: Report): void {
    if (this.disposed) return;
    this.queue.push(report);
    this.pump();
  }

  private pump(): void {
    if (this.disposed || this.inFlight || !this.link.ready) return;
    const next = this.queue[0];
    if (!next) return;
    this.inFlight = true;
    const round = this.round;
    const onAck = (ack: Ack<unknown> | undefined) => {
      if (round !== this.round || this.disposed) return;
      this.inFlight = false;
      if (ack?.ok || (ack && !RETRYABLE_CODES.has(ack.error.code))) {
        if (ack && !ack.ok) this.log.error({ event: next.event, error: errorFields(ack.error) }, 'hub refused a share report');
        this.queue.shift();
        if (next.event === 'share:failed') {
          this.failedTaken = true;
          this.onSettled();
          return;
        }
        this.pump();
        return;
      }
      // Dropped connection: the reconnect's resend covers it.
      if (this.link.ready) {
        this.log.warn({ event: next.event, error: ack ? errorFields(ack.error) : 'no answer' }, 'share report not acknowledged; will retry');
        this.scheduleRetry();
      }
    };
    if (next.event === 'share:ready') this.link.send('share:ready', next.payload, onAck);
    else this.link.send('share:failed', next.payload, onAck);
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
