import type { Clock } from '@handoff/shared';
import type { HubLink } from './hub-link.js';
import type { Logger } from './logger.js';
import { ReportQueue, type Report } from './report-queue.js';

export interface ShareReporterOptions {
  sessionId: string;
  link: HubLink;
  logger: Logger;
  /** Called once the hub has taken the `share:failed` report: nothing more will be said about the share. */
  onSettled: () => void;
  /** Delay before retrying after a timeout or a transient refusal, in ms. Default 2000. */
  retryMs?: number;
  /** Owns the retry timer. Default `systemClock`. */
  clock?: Clock;
}

type ShareReport = Report<'share:ready' | 'share:failed'>;

/**
 * Delivers one share's reports to the hub, in order — `share:ready`, then maybe
 * `share:failed` — through a ReportQueue: one at a time, sent again after a reconnect.
 * Payloads carry RW attach data: nothing here ever logs one.
 */
export class ShareReporter {
  readonly sessionId: string;
  private readonly queue: ReportQueue<ShareReport>;
  private failedTaken = false;

  constructor(opts: ShareReporterOptions) {
    this.sessionId = opts.sessionId;
    this.queue = new ReportQueue<ShareReport>({
      link: opts.link,
      logger: opts.logger,
      ...(opts.retryMs === undefined ? {} : { retryMs: opts.retryMs }),
      clock: opts.clock,
      // A ready report not sent yet is moot once the share failed: the hub goes straight to ERROR.
      supersedes: (queued, incoming) => queued.event === 'share:ready' && incoming.event === 'share:failed',
      onTaken: (report) => {
        if (report.event !== 'share:failed') return;
        this.failedTaken = true;
        this.queue.dispose();
        opts.onSettled();
      },
    });
  }

  /** Whether the hub has taken the final `share:failed` report. */
  get settled(): boolean {
    return this.failedTaken;
  }

  ready(attachRo: Record<string, string>, attachRw: Record<string, string>): void {
    void this.queue.push({ event: 'share:ready', payload: { sessionId: this.sessionId, attachRo, attachRw } });
  }

  failed(message: string): void {
    void this.queue.push({ event: 'share:failed', payload: { sessionId: this.sessionId, message: message.slice(0, 2000) } });
  }

  /** After a (re)connect, or to retry: send the oldest unacknowledged report again. */
  resend(): void {
    this.queue.resend();
  }

  /** Stops reporting (the share was stopped on purpose; whatever is pending is moot). */
  dispose(): void {
    this.queue.dispose();
  }
}
