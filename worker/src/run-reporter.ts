import type { Ack, Clock, Frame, PaneInfo } from '@handoff/shared';
import { FrameBatcher, type FrameBatcherOptions } from './frame-batcher.js';
import { judgeAck, RetryTimer, type HubLink, type PayloadOf } from './hub-link.js';
import type { Logger } from './logger.js';
import { ReportQueue } from './report-queue.js';

export interface RunExit {
  exitCode: number | null;
  error?: string;
}

export interface RunReporterOptions {
  runId: string;
  link: HubLink;
  logger: Logger;
  batcher: Omit<FrameBatcherOptions, 'onFrame' | 'onRoom' | 'live'>;
  /** Acks freed room after `hasRoom()` was false: the output source may read again. */
  onRoom?: () => void;
  /** Called once the hub has taken the exit report: the run can be forgotten. */
  onSettled: () => void;
  /**
   * Called with each frame as it is sealed, before it can be sent, with how many characters
   * of `output()` it completes (see FrameBatcher's `onFrame`): the run's frame journal.
   */
  onFrameSealed?: (frame: Frame, pushedThrough: number) => void;
  /** Delay before retrying after a timeout or a transient refusal, in ms. Default 2000. */
  retryMs?: number;
  /** Owns the retry timers. Default `systemClock`. */
  clock?: Clock;
}

/**
 * Where a report stands: not due yet, to send, sent and unanswered, waiting for the
 * retry timer, taken by the hub (or refused for good).
 */
type ReportState = 'idle' | 'due' | 'sent' | 'backoff' | 'done';

/** Largest `run:output` payload, in characters of frame data (far below socket.io's 1 MB message cap even when JSON escaping inflates control characters). */
const MAX_EMIT_CHARS = 64 * 1024;
const MAX_EMIT_FRAMES = 1000;

/**
 * Delivers one run's reports to the hub, in order — `run:started`, then `run:output`
 * frames (and, alongside them, `control:applied` / `run:needs-operator`), then
 * `run:exited` once every frame and event is acknowledged — and sends again whatever is
 * unacknowledged after a reconnect, so neither output, nor a pause, nor the exit is lost.
 */
export class RunReporter {
  readonly runId: string;
  private readonly link: HubLink;
  private readonly log: Logger;
  private readonly batcher: FrameBatcher;
  /** Control changes that took hold and requests for an operator, after `run:started`. */
  private readonly events: ReportQueue;
  private readonly onSettled: () => void;

  private started: ReportState = 'idle';
  private pane: PaneInfo | null = null;
  private exited: ReportState = 'idle';
  private exit: RunExit | null = null;
  /** Highest seq handed to the link in this round. */
  private sentThrough = 0;
  /** Output emits of this round not answered yet. */
  private outputInFlight = 0;
  /** An answer of this round showed the hub stopped short of what it was sent. */
  private hubFellBehind = false;
  /** ackedSeq when frames were last resent because the hub fell behind. */
  private ackedAtCatchUp = 0;
  /** Bumped on every resend: answers to emits of an older round are only used for acks. */
  private round = 0;
  private readonly retry: RetryTimer;
  private disposed = false;

  constructor(opts: RunReporterOptions) {
    this.runId = opts.runId;
    this.link = opts.link;
    this.log = opts.logger;
    this.onSettled = opts.onSettled;
    // A retry that fires after dispose() does nothing (dispose also clears it).
    this.retry = new RetryTimer(
      opts.retryMs ?? 2000,
      () => {
        if (!this.disposed) this.restart();
      },
      opts.clock,
    );
    this.batcher = new FrameBatcher({
      ...opts.batcher,
      live: opts.link.ready,
      onFrame: (frame, pushedThrough) => {
        opts.onFrameSealed?.(frame, pushedThrough);
        this.pump();
      },
      onRoom: () => opts.onRoom?.(),
    });
    this.events = new ReportQueue({
      link: opts.link,
      logger: opts.logger,
      retryMs: opts.retryMs ?? 2000,
      clock: opts.clock,
      // The hub takes a control report or a request only for a run it knows is running.
      canSend: () => this.outputOpen,
      onDrained: () => this.pump(),
      // A hand-back's report carries the captured context the hub records: a newer control report never replaces it.
      supersedes: (queued, incoming) => queued.event === incoming.event && !(queued.event === 'control:applied' && queued.payload.handoff),
    });
  }

  /** Whether the hub has taken the exit report. */
  get settled(): boolean {
    return this.exited === 'done';
  }

  /** `pane`: the pane's size and terminal, recorded by the hub for the recording's header. */
  reportStarted(pane?: PaneInfo | null): void {
    if (this.started !== 'idle') return;
    this.started = 'due';
    this.pane = pane ?? null;
    this.pump();
  }

  output(text: string): void {
    this.batcher.push(text);
  }

  /** Whether more output may be handed in now; when not, `onRoom` says when (see FrameBatcher `roomChars`). */
  hasRoom(): boolean {
    return this.batcher.hasRoom();
  }

  /** Keys were typed into the run's terminal: their echo is sent at once (see FrameBatcher `echoWindowMs`). */
  noteInput(): void {
    this.batcher.noteInput();
  }

  /** Seals the output received so far into a frame (while the hub is reachable) and returns the newest frame's seq (0: none yet). */
  outputSeq(): number {
    this.batcher.flush();
    return this.batcher.lastSeq;
  }

  /**
   * A control change took hold (only the newest unsent one is kept, but a hand-back's is never
   * dropped). Resolves once the hub took the report, or it will not be sent (see `ReportQueue.push`).
   */
  reportControlApplied(payload: PayloadOf<'control:applied'>): Promise<void> {
    if (this.exit) return Promise.resolve(); // the run ended: its control state no longer matters
    return this.events.push({ event: 'control:applied', payload });
  }

  /** The agent asked for an operator. */
  reportNeedsOperator(reason: string): void {
    if (this.exit) return;
    void this.events.push({ event: 'run:needs-operator', payload: { runId: this.runId, reason: reason.slice(0, 2000) } });
  }

  /** The run ended: seal the last output, and report the exit once the hub has every frame. */
  reportExited(exit: RunExit): void {
    if (this.exit) return;
    this.exit = exit;
    this.batcher.flush();
    this.exited = 'due';
    this.pump();
  }

  /**
   * The hub has recorded every frame up to `lastSeq` (a re-adopted run: the hello's
   * verdict): those are never sent again.
   */
  acknowledged(lastSeq: number): void {
    this.batcher.ack(lastSeq);
  }

  /** Seq of the newest frame sealed (0: none yet), without sealing anything. */
  get lastSeq(): number {
    return this.batcher.lastSeq;
  }

  /** After a (re)connect: send everything the hub has not acknowledged, in order. */
  resend(): void {
    this.events.resend();
    this.restart();
  }

  /** Sends again the started/output/exit reports the hub has not acknowledged. */
  private restart(): void {
    this.round += 1;
    this.retry.clear();
    if (this.started === 'sent' || this.started === 'backoff') this.started = 'due';
    if (this.exited === 'sent' || this.exited === 'backoff') this.exited = 'due';
    this.sentThrough = this.batcher.ackedSeq;
    this.outputInFlight = 0;
    this.hubFellBehind = false;
    this.batcher.setLive(this.link.ready);
    this.pump();
  }

  /** The connection dropped: output waits (bounded) until `resend()`. */
  offline(): void {
    this.batcher.setLive(false);
  }

  dispose(): void {
    this.disposed = true;
    this.events.dispose();
    this.retry.clear();
    this.batcher.dispose();
  }

  /** The hub learns the run is running before it gets output or events (unless it never started). */
  private get outputOpen(): boolean {
    return this.started === 'done' || (this.started === 'idle' && this.exit !== null);
  }

  private pump(): void {
    if (this.disposed || !this.link.ready) return;
    if (this.started === 'due') this.sendStarted();
    if (!this.outputOpen) return;
    this.sendFrames();
    this.events.pump();
    if (this.exited === 'due' && !this.batcher.hasUnacked && !this.batcher.hasPending && this.events.empty) this.sendExited();
  }

  private sendStarted(): void {
    this.started = 'sent';
    const round = this.round;
    // `sinceMs` lets the hub place the run's start on its own clock at the origin of the frames' `t`.
    this.link.send('run:started', { runId: this.runId, sinceMs: this.batcher.elapsed(), ...(this.pane ? { pane: this.pane } : {}) }, (ack) => {
      if (round !== this.round || this.started !== 'sent') return;
      this.started = this.judge(ack, 'run:started');
      if (this.started === 'done') this.pump();
    });
  }

  private sendFrames(): void {
    const pending = this.batcher.unacked().filter((f) => f.seq > this.sentThrough);
    while (pending.length > 0) {
      const frames: Frame[] = [];
      let chars = 0;
      while (pending.length > 0 && frames.length < MAX_EMIT_FRAMES) {
        const next = pending[0]!;
        if (frames.length > 0 && chars + next.data.length > MAX_EMIT_CHARS) break;
        frames.push(pending.shift()!);
        chars += next.data.length;
      }
      const through = frames[frames.length - 1]!.seq;
      this.sentThrough = through;
      this.outputInFlight += 1;
      const round = this.round;
      this.link.send('run:output', { runId: this.runId, frames }, (ack) => {
        if (ack?.ok) this.batcher.ack(ack.data.lastSeq); // valid whatever the round
        if (round !== this.round) return;
        this.outputInFlight -= 1;
        if (ack?.ok) {
          if (ack.data.lastSeq < through) this.hubFellBehind = true;
        } else if (this.judge(ack, 'run:output') === 'done') {
          this.batcher.ack(through); // refused for good: sending it again would not help
        }
        if (this.outputInFlight === 0 && this.hubFellBehind) this.catchUp();
        this.pump();
      });
    }
  }

  /**
   * The hub takes only a gapless sequence and answered short of what it was sent (a batch
   * overtook an earlier one on its side). Once every answer is in, send again from its
   * lastSeq: at once while that makes progress, after a pause when it does not.
   */
  private catchUp(): void {
    this.hubFellBehind = false;
    if (this.batcher.ackedSeq > this.ackedAtCatchUp) {
      this.ackedAtCatchUp = this.batcher.ackedSeq;
      this.sentThrough = this.batcher.ackedSeq;
    } else {
      this.retry.schedule();
    }
  }

  private sendExited(): void {
    const exit = this.exit!;
    this.exited = 'sent';
    const round = this.round;
    const payload =
      exit.error === undefined
        ? { runId: this.runId, exitCode: exit.exitCode }
        : { runId: this.runId, exitCode: exit.exitCode, error: exit.error.slice(0, 2000) };
    this.link.send('run:exited', payload, (ack) => {
      if (round !== this.round || this.exited !== 'sent') return;
      this.exited = this.judge(ack, 'run:exited');
      if (this.exited === 'done') {
        this.retry.clear();
        this.onSettled();
      }
    });
  }

  private judge(ack: Ack<unknown> | undefined, event: string): 'done' | 'backoff' {
    return judgeAck(ack, event, this.link, this.log, () => this.retry.schedule());
  }
}
