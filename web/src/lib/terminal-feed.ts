import { errorMessage } from './api.js';
import { FrameSequencer, type SequencerStep } from './frame-sequencer.js';
import type { HubConnection } from './hub.svelte.js';

export interface TerminalFeedOptions {
  runId: string;
  hub: Pick<HubConnection, 'on' | 'whileConnected' | 'request' | 'connected'>;
  /** Receives terminal output, in order, exactly once. */
  write: (data: string) => void;
  /** Reports a failed subscribe (e.g. FORBIDDEN), or null once one succeeds. */
  onError?: (message: string | null) => void;
  /** The hub ended live viewing (`term:closed`: revoked or expired); the feed has stopped. */
  onClosed?: (reason: string) => void;
  /** Minimum time between two gap resyncs, in ms. Default 1000. */
  resyncIntervalMs?: number;
  /** At most this many frames of scrollback per subscribe (`term:subscribe` tailFrames). Default: the hub's tail. */
  tailFrames?: number;
}

/**
 * Streams a run's terminal: `term:subscribe` for the scrollback (again after every
 * reconnect, from the last written seq), live `term:frame`s, and a throttled
 * resync when frames go missing. `term:closed` ends it for good (the hub already
 * removed this viewer from the room). Returns a stop function that unsubscribes.
 */
export function followTerminal(options: TerminalFeedOptions): () => void {
  const { runId, hub, write, onError, onClosed } = options;
  const interval = options.resyncIntervalMs ?? 1000;
  const sequencer = new FrameSequencer();
  let stopped = false;
  let resyncing = false;
  let lastResyncAt = Number.NEGATIVE_INFINITY;
  let resyncTimer: ReturnType<typeof setTimeout> | undefined;

  const apply = (step: SequencerStep): void => {
    if (step.write.length > 0) write(step.write.map((frame) => frame.data).join(''));
    if (step.needsResync) scheduleResync();
  };

  /** `term:subscribe` from where the stream stands; resolves to the answer's frames, or null. */
  const fetchFrames = async () => {
    const afterSeq = sequencer.afterSeq;
    try {
      const bound = options.tailFrames === undefined ? {} : { tailFrames: options.tailFrames };
      const answer = await hub.request('term:subscribe', afterSeq === undefined ? { runId, ...bound } : { runId, afterSeq, ...bound });
      if (stopped) return null;
      onError?.(null);
      return answer.frames;
    } catch (error) {
      if (!stopped) onError?.(errorMessage(error));
      return null;
    }
  };

  const subscribe = async (): Promise<void> => {
    const frames = await fetchFrames();
    if (frames) apply(sequencer.snapshot(frames));
  };

  const resync = async (): Promise<void> => {
    resyncing = true;
    lastResyncAt = Date.now();
    const frames = await fetchFrames();
    // Cleared before applying, so a gap the answer did not close schedules the next try.
    resyncing = false;
    if (frames) apply(sequencer.snapshot(frames));
  };

  function scheduleResync(): void {
    if (resyncing || resyncTimer !== undefined || stopped) return;
    const wait = lastResyncAt + interval - Date.now();
    if (wait <= 0) {
      void resync();
      return;
    }
    resyncTimer = setTimeout(() => {
      resyncTimer = undefined;
      if (!stopped) void resync();
    }, wait);
  }

  const offFrame = hub.on('term:frame', (push) => {
    if (push.runId === runId) apply(sequencer.live(push.frames));
  });
  // The hub skipped this page while it lagged: what it missed may have no later frame to reveal it.
  const offResume = hub.on('term:resume', () => scheduleResync());
  const unregister = hub.whileConnected(() => void subscribe());

  const halt = (): void => {
    stopped = true;
    clearTimeout(resyncTimer);
    offFrame();
    offResume();
    offClosed();
    unregister();
  };
  const offClosed = hub.on('term:closed', (push) => {
    if (push.runId !== runId || stopped) return;
    // Not resubscribed on reconnect either: the hub would refuse it until a new web share.
    halt();
    onClosed?.(push.reason);
  });

  return () => {
    if (stopped) return;
    halt();
    // Best effort: a missed unsubscribe only costs frames this page no longer listens to.
    if (hub.connected) hub.request('term:unsubscribe', { runId }).catch(() => undefined);
  };
}
