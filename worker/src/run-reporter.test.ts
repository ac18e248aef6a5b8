import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Ack, Frame } from '@handoff/shared';
import type { HubLink, ReportEvent } from './hub-link.js';
import { RunReporter } from './run-reporter.js';

interface Sent {
  event: ReportEvent;
  payload: any;
  ack: (a: Ack<any> | undefined) => void;
}

/** A link whose acks the test answers by hand. */
class ManualLink implements HubLink {
  ready = true;
  sent: Sent[] = [];
  send(event: ReportEvent, payload: unknown, onAck: (a: Ack<any> | undefined) => void): void {
    this.sent.push({ event, payload, ack: onAck });
  }
  take(): Sent[] {
    return this.sent.splice(0);
  }
  /** Short descriptions of the unanswered emits: `run:started`, `run:output#1,2`, … */
  pending(): string[] {
    return this.sent.map((s) => (s.event === 'run:output' ? `run:output#${s.payload.frames.map((f: Frame) => f.seq).join(',')}` : s.event));
  }
}

const RUN = '0190f3a4-0000-7000-8000-000000000001';
const ok = (data: unknown = {}) => ({ ok: true as const, data });

function reporter(link: ManualLink) {
  const settled = vi.fn();
  const r = new RunReporter({ runId: RUN, link, logger: pino({ level: 'silent' }), batcher: { flushMs: 16 }, onSettled: settled, retryMs: 1000 });
  return { r, settled };
}

/** Acks every unanswered output emit as a hub that has everything through its last seq. */
function ackOutputs(link: ManualLink): void {
  for (const s of link.sent.splice(0)) {
    if (s.event !== 'run:output') throw new Error(`unexpected ${s.event}`);
    s.ack(ok({ lastSeq: s.payload.frames[s.payload.frames.length - 1].seq }));
  }
}

describe('RunReporter', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('reports started, then output, then the exit once every frame is acknowledged', () => {
    const link = new ManualLink();
    const { r, settled } = reporter(link);
    r.reportStarted();
    r.output('hello ');
    vi.advanceTimersByTime(16);
    expect(link.pending()).toEqual(['run:started']); // output waits for the hub to know the run started
    link.take()[0]!.ack(ok());
    expect(link.pending()).toEqual(['run:output#1']);
    r.output('world');
    vi.advanceTimersByTime(16);
    r.reportExited({ exitCode: 0 });
    expect(link.pending()).toEqual(['run:output#1', 'run:output#2']); // the exit waits for the acks
    ackOutputs(link);
    expect(link.pending()).toEqual(['run:exited']);
    const exit = link.take()[0]!;
    expect(exit.payload).toEqual({ runId: RUN, exitCode: 0 });
    expect(settled).not.toHaveBeenCalled();
    exit.ack(ok());
    expect(settled).toHaveBeenCalledOnce();
  });

  it('after a disconnect, resends exactly what was not acknowledged, in order, then the exit', () => {
    const link = new ManualLink();
    const { r, settled } = reporter(link);
    r.reportStarted();
    link.take()[0]!.ack(ok());
    r.output('a');
    vi.advanceTimersByTime(16);
    r.output('b');
    vi.advanceTimersByTime(16);
    const [first, second] = link.take();
    first!.ack(ok({ lastSeq: 1 }));

    // Connection lost: the in-flight emit goes unanswered, output and exit happen offline.
    link.ready = false;
    r.offline();
    second!.ack(undefined);
    r.output('c');
    vi.advanceTimersByTime(100);
    r.reportExited({ exitCode: 2, error: undefined });
    vi.advanceTimersByTime(5000);
    expect(link.sent).toEqual([]);

    link.ready = true;
    r.resend();
    expect(link.pending()).toEqual(['run:output#2,3']);
    const resent = link.take()[0]!;
    expect(resent.payload.frames.map((f: Frame) => f.data)).toEqual(['b', 'c']);
    resent.ack(ok({ lastSeq: 3 }));
    expect(link.pending()).toEqual(['run:exited']);
    link.take()[0]!.ack(ok());
    expect(settled).toHaveBeenCalledOnce();
  });

  it('resends from the hub’s lastSeq when the hub stopped short of a batch', () => {
    const link = new ManualLink();
    const { r } = reporter(link);
    r.reportStarted();
    link.take()[0]!.ack(ok());
    for (const s of ['1', '2', '3']) {
      r.output(s);
      vi.advanceTimersByTime(16);
    }
    const [one, two, three] = link.take();
    three!.ack(ok({ lastSeq: 0 })); // arrived first: the hub needs 1 and 2 before it
    one!.ack(ok({ lastSeq: 1 }));
    two!.ack(ok({ lastSeq: 2 }));
    expect(link.pending()).toEqual(['run:output#3']); // progress → resent at once
    link.take()[0]!.ack(ok({ lastSeq: 3 }));
    r.reportExited({ exitCode: 0 });
    expect(link.pending()).toEqual(['run:exited']);
  });

  it('retries after a transient refusal or a timeout, and gives up on a definitive refusal', () => {
    const link = new ManualLink();
    const { r, settled } = reporter(link);
    r.reportStarted();
    link.take()[0]!.ack({ ok: false, error: { code: 'UNAVAILABLE', message: 'db down' } });
    expect(link.sent).toEqual([]);
    vi.advanceTimersByTime(1000);
    expect(link.pending()).toEqual(['run:started']);
    link.take()[0]!.ack(undefined); // timed out on a live connection
    vi.advanceTimersByTime(1000);
    expect(link.pending()).toEqual(['run:started']);
    link.take()[0]!.ack(ok());

    r.reportExited({ exitCode: 1 });
    link.take()[0]!.ack({ ok: false, error: { code: 'STATE_CONFLICT', message: 'run already finished' } });
    expect(settled).toHaveBeenCalledOnce(); // resending would never succeed
    vi.advanceTimersByTime(5000);
    expect(link.sent).toEqual([]);
  });

  it('a run that never started reports only its exit', () => {
    const link = new ManualLink();
    const { r } = reporter(link);
    r.reportExited({ exitCode: null, error: 'could not start the run: tmux not found' });
    expect(link.pending()).toEqual(['run:exited']);
    expect(link.sent[0]!.payload).toEqual({ runId: RUN, exitCode: null, error: 'could not start the run: tmux not found' });
  });
});
