import type { Ack, Clock } from '@handoff/shared';
import { judgeAck, RetryTimer, type HubLink, type PayloadOf, type ReportEvent } from './hub-link.js';
import type { Logger } from './logger.js';

/** A discrete report to the hub: an event and its payload. */
export type Report<E extends ReportEvent = ReportEvent> = { [K in E]: { event: K; payload: PayloadOf<K> } }[E];

/** The one-off reports of a run besides its output: control changes that took hold, and requests for an operator. */
export type RunEventReport = Report<'control:applied' | 'run:needs-operator'>;

/** By default a newer report replaces a queued one of the same event (seqs only grow; the latest reason wins). */
const sameEvent = (queued: Report, incoming: Report) => queued.event === incoming.event;

export interface ReportQueueOptions<R extends Report> {
  link: HubLink;
  logger: Logger;
  /** Whether reports may go out now (the run reporter holds them until the hub knows the run started). Default: always. */
  canSend?: () => boolean;
  /** Everything queued was taken (or refused for good). */
  onDrained?: () => void;
  /** Called for each report the hub took (or refused for good). */
  onTaken?: (report: R) => void;
  /** Whether `incoming` makes the queued, unsent `queued` moot. Default: the same event. */
  supersedes?: (queued: R, incoming: R) => boolean;
  /** Delay before retrying after a timeout or a transient refusal, in ms. Default 2000. */
  retryMs?: number;
  /** Owns the retry timer. Default `systemClock`. */
  clock?: Clock;
}

/** A queued report and what settles its `push()`. */
interface Queued<R> {
  report: R;
  settle: () => void;
}

/**
 * Delivers discrete reports to the hub one at a time, in order, and sends the oldest
 * unacknowledged one again after a reconnect (or a transient refusal) until the hub takes
 * it. A report not sent yet is dropped when a newer one supersedes it, so a chatty agent
 * cannot flood the hub. Payloads may carry RW attach data: nothing here logs a payload.
 */
export class ReportQueue<R extends Report = RunEventReport> {
  private readonly link: HubLink;
  private readonly log: Logger;
  private readonly canSend: () => boolean;
  private readonly onDrained: () => void;
  private readonly onTaken: (report: R) => void;
  private readonly supersedes: (queued: R, incoming: R) => boolean;
  private readonly queue: Queued<R>[] = [];
  private inFlight = false;
  /** Bumped on every resend: an answer to an older round's emit is ignored. */
  private round = 0;
  private readonly retry: RetryTimer;
  private disposed = false;

  constructor(opts: ReportQueueOptions<R>) {
    this.link = opts.link;
    this.log = opts.logger;
    this.canSend = opts.canSend ?? (() => true);
    this.onDrained = opts.onDrained ?? (() => undefined);
    this.onTaken = opts.onTaken ?? (() => undefined);
    this.supersedes = opts.supersedes ?? sameEvent;
    this.retry = new RetryTimer(
      opts.retryMs ?? 2000,
      () => {
        if (!this.disposed) this.resend();
      },
      opts.clock,
    );
  }

  /** Nothing waits to be sent or answered. */
  get empty(): boolean {
    return this.queue.length === 0;
  }

  /**
   * Queues `report`. Resolves once it is done with: the hub took it (or refused it for good),
   * a newer report superseded it before it was sent, or the queue was disposed.
   */
  push(report: R): Promise<void> {
    if (this.disposed) return Promise.resolve();
    const keep = this.inFlight ? 1 : 0; // the one in flight may already be taken: it stays
    const kept: Queued<R>[] = [];
    for (const [i, q] of this.queue.entries()) {
      if (i < keep || !this.supersedes(q.report, report)) kept.push(q);
      else q.settle();
    }
    let settle = () => {};
    const done = new Promise<void>((resolve) => (settle = resolve));
    this.queue.splice(0, this.queue.length, ...kept, { report, settle });
    this.pump();
    return done;
  }

  /** After a (re)connect, or to retry: send the oldest unacknowledged report again. */
  resend(): void {
    this.round += 1;
    this.inFlight = false;
    this.retry.clear();
    // The unanswered report is sent again unless a newer one supersedes it.
    const head = this.queue[0];
    if (head && this.queue.some((q, i) => i > 0 && this.supersedes(head.report, q.report))) this.queue.shift()?.settle();
    this.pump();
  }

  dispose(): void {
    this.disposed = true;
    for (const q of this.queue.splice(0)) q.settle();
    this.retry.clear();
  }

  /** Sends the next report if none is in flight and the link and the owner allow it. */
  pump(): void {
    if (this.disposed || this.inFlight || !this.link.ready || !this.canSend()) return;
    const head = this.queue[0];
    if (!head) return;
    const next = head.report;
    this.inFlight = true;
    const round = this.round;
    const onAck = (ack: Ack<unknown> | undefined) => {
      if (round !== this.round || this.disposed) return;
      this.inFlight = false;
      if (judgeAck(ack, next.event, this.link, this.log, () => this.retry.schedule()) === 'backoff') return;
      this.queue.shift();
      head.settle();
      this.onTaken(next);
      if (this.disposed) return;
      if (this.queue.length === 0) this.onDrained();
      this.pump();
    };
    // The union of reports is checked where reports are built; here one event goes out as is.
    (this.link.send as (event: ReportEvent, payload: unknown, onAck: (ack: Ack<unknown> | undefined) => void) => void)(next.event, next.payload, onAck);
  }
}
