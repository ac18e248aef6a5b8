import type { Frame } from '@handoff/shared';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { RequestName } from './hub.svelte.js';
import { followTerminal, type TerminalFeedOptions } from './terminal-feed.js';

const RUN = '0190f5b2-7c3e-7000-8000-000000000001';
const frame = (seq: number): Frame => ({ seq, t: seq, data: `${seq};` });
const frames = (from: number, to: number): Frame[] => Array.from({ length: to - from + 1 }, (_, i) => frame(from + i));

/** A stand-in hub: records requests and lets the test answer them and push frames. */
class FakeHub {
  connected = true;
  requests: { event: RequestName; payload: unknown; resolve: (data: unknown) => void }[] = [];
  #onConnect = new Set<() => void>();
  #onFrame = new Set<(push: { runId: string; frames: Frame[] }) => void>();
  #onClosed = new Set<(push: { runId: string; reason: string }) => void>();
  #onResume = new Set<() => void>();

  on(event: 'term:frame' | 'term:closed' | 'term:resume', handler: (push: never) => void) {
    const set: Set<(push: never) => void> = event === 'term:frame' ? this.#onFrame : event === 'term:resume' ? this.#onResume : this.#onClosed;
    set.add(handler);
    return () => set.delete(handler);
  }
  whileConnected(fn: () => void) {
    this.#onConnect.add(fn);
    if (this.connected) fn();
    return () => this.#onConnect.delete(fn);
  }
  request(event: RequestName, payload: unknown) {
    return new Promise((resolve) => this.requests.push({ event, payload, resolve }));
  }
  push(list: Frame[], runId = RUN) {
    for (const handler of this.#onFrame) handler({ runId, frames: list });
  }
  close(reason: string, runId = RUN) {
    for (const handler of this.#onClosed) handler({ runId, reason });
  }
  resume() {
    for (const handler of this.#onResume) handler();
  }
  reconnect() {
    for (const fn of this.#onConnect) fn();
  }
  /** Answers the oldest pending term:subscribe. */
  async answer(list: Frame[]) {
    const index = this.requests.findIndex((r) => r.event === 'term:subscribe');
    const [request] = this.requests.splice(index, 1);
    request?.resolve({ frames: list, truncated: false });
    await vi.advanceTimersByTimeAsync(0);
  }
  subscribes() {
    return this.requests.filter((r) => r.event === 'term:subscribe').map((r) => r.payload);
  }
}

describe('followTerminal', () => {
  let hub: FakeHub;
  let written: string;
  let closed: string[];
  let stop: () => void;

  beforeEach(() => {
    vi.useFakeTimers();
    hub = new FakeHub();
    written = '';
    closed = [];
    stop = followTerminal({
      runId: RUN,
      hub: hub as unknown as TerminalFeedOptions['hub'],
      write: (data) => (written += data),
      onClosed: (reason) => closed.push(reason),
      resyncIntervalMs: 1000,
    });
  });
  afterEach(() => {
    stop();
    vi.useRealTimers();
  });

  it('writes the scrollback, then live frames, ignoring other runs', async () => {
    expect(hub.subscribes()).toEqual([{ runId: RUN }]);
    hub.push([frame(3)]);
    await hub.answer(frames(1, 2));
    hub.push([frame(4)]);
    hub.push([frame(5)], 'another-run');
    expect(written).toBe('1;2;3;4;');
  });

  it('resyncs a gap from lastSeq, at most once per interval', async () => {
    await hub.answer(frames(1, 2));
    hub.push([frame(5)]);
    expect(hub.subscribes()).toEqual([{ runId: RUN, afterSeq: 2 }]);
    hub.push([frame(6)]);
    expect(hub.subscribes()).toHaveLength(1);
    await hub.answer(frames(3, 3));
    // Frame 4 is still missing: the next try waits for the interval.
    expect(hub.subscribes()).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1000);
    expect(hub.subscribes()).toEqual([{ runId: RUN, afterSeq: 3 }]);
    await hub.answer(frames(4, 6));
    expect(written).toBe('1;2;3;4;5;6;');
  });

  it('resyncs when the hub says it skipped this page while it lagged, though no later frame shows a gap', async () => {
    await hub.answer(frames(1, 2));
    // Frames 3 and 4 (the run's last output) were skipped; nothing follows them.
    hub.resume();
    expect(hub.subscribes()).toEqual([{ runId: RUN, afterSeq: 2 }]);
    await hub.answer(frames(3, 4));
    expect(written).toBe('1;2;3;4;');
  });

  it('resubscribes after a reconnect from the last written frame', async () => {
    await hub.answer(frames(1, 4));
    hub.reconnect();
    expect(hub.subscribes()).toEqual([{ runId: RUN, afterSeq: 4 }]);
    await hub.answer(frames(3, 7));
    expect(written).toBe('1;2;3;4;5;6;7;');
  });

  it('unsubscribes and writes nothing more once stopped', async () => {
    stop();
    expect(hub.requests.map((r) => r.event)).toContain('term:unsubscribe');
    await hub.answer(frames(1, 2));
    hub.push([frame(3)]);
    expect(written).toBe('');
  });

  it('stops for good on term:closed for its run: no more frames, no resubscribe', async () => {
    await hub.answer(frames(1, 2));
    hub.close('other', 'another-run');
    expect(closed).toEqual([]);
    hub.close('revoked by alice');
    expect(closed).toEqual(['revoked by alice']);
    hub.push([frame(3)]);
    hub.reconnect();
    expect(hub.subscribes()).toEqual([]);
    expect(written).toBe('1;2;');
    // The hub already removed the viewer: stopping later sends nothing more.
    stop();
    expect(hub.requests.map((r) => r.event)).not.toContain('term:unsubscribe');
  });
});
