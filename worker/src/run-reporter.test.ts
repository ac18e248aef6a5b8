import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ManualClock, type Ack, type Frame } from '@handoff/shared';
import type { HubLink, ReportEvent } from './hub-link.js';
import { RunReporter } from './run-reporter.js';
import { capturedLogger } from './testing/shares.js';

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

  it('retries on the injected clock: its own reports and its control reports alike', () => {
    const link = new ManualLink();
    const clock = new ManualClock();
    const r = new RunReporter({ runId: RUN, link, logger: pino({ level: 'silent' }), batcher: { flushMs: 16 }, onSettled: vi.fn(), retryMs: 1000, clock });
    r.reportStarted();
    link.take()[0]!.ack({ ok: false, error: { code: 'UNAVAILABLE', message: 'db down' } });
    vi.advanceTimersByTime(5000); // the process's timers do not drive it
    expect(link.sent).toEqual([]);
    clock.advance(999);
    expect(link.sent).toEqual([]);
    clock.advance(1);
    expect(link.pending()).toEqual(['run:started']);
    link.take()[0]!.ack(ok());

    r.reportNeedsOperator('stuck');
    link.take()[0]!.ack({ ok: false, error: { code: 'RATE_LIMITED', message: 'slow down' } });
    clock.advance(999);
    expect(link.sent).toEqual([]);
    clock.advance(1);
    expect(link.pending()).toEqual(['run:needs-operator']);
    link.take()[0]!.ack(ok());
    r.dispose();
    expect(clock.pending).toBe(0);
  });

  it('reports control changes and operator requests once the hub knows the run started, one at a time; the exit waits for them', () => {
    const link = new ManualLink();
    const { r, settled } = reporter(link);
    r.reportControlApplied({ runId: RUN, seq: 1, effective: 'paused-hard', appliedAt: 1000 });
    expect(link.pending()).toEqual([]); // nothing before run:started
    r.reportStarted();
    expect(link.pending()).toEqual(['run:started']);
    link.take()[0]!.ack(ok());
    expect(link.pending()).toEqual(['control:applied']);
    r.reportNeedsOperator('stuck');
    r.reportExited({ exitCode: 0 });
    expect(link.pending()).toEqual(['control:applied']); // one report at a time, the exit after them
    const applied = link.take()[0]!;
    expect(applied.payload).toEqual({ runId: RUN, seq: 1, effective: 'paused-hard', appliedAt: 1000 });
    applied.ack(ok());
    const needs = link.take()[0]!;
    expect(needs.event).toBe('run:needs-operator');
    expect(needs.payload).toEqual({ runId: RUN, reason: 'stuck' });
    needs.ack(ok());
    expect(link.pending()).toEqual(['run:exited']);
    link.take()[0]!.ack(ok());
    expect(settled).toHaveBeenCalledOnce();
  });

  it('keeps only the newest unsent report of an event, and resends the unanswered one after a reconnect', () => {
    const link = new ManualLink();
    const { r } = reporter(link);
    r.reportStarted();
    link.take()[0]!.ack(ok());
    r.reportControlApplied({ runId: RUN, seq: 1, effective: 'paused-soft', appliedAt: 1 });
    r.reportControlApplied({ runId: RUN, seq: 2, effective: 'agent', appliedAt: 2 });
    r.reportControlApplied({ runId: RUN, seq: 3, effective: 'paused-hard', appliedAt: 3 });
    const first = link.take()[0]!;
    expect(first.payload.seq).toBe(1); // already in flight: it stays

    // Connection lost with seq 1 unanswered: after the reconnect only seq 3 goes (it supersedes 1, and 2 was never sent).
    link.ready = false;
    r.offline();
    first.ack(undefined);
    link.ready = true;
    r.resend();
    const [again] = link.take();
    expect(again!.payload.seq).toBe(3);
    again!.ack({ ok: false, error: { code: 'UNAVAILABLE', message: 'db down' } });
    vi.advanceTimersByTime(1000);
    const retried = link.take();
    expect(retried.map((s) => s.payload.seq)).toEqual([3]);
    r.reportNeedsOperator('help');
    retried[0]!.ack({ ok: false, error: { code: 'STATE_CONFLICT', message: 'run ended' } }); // refused for good: dropped
    const next = link.take();
    expect(next.map((s) => s.event)).toEqual(['run:needs-operator']);
    next[0]!.ack(undefined); // no answer on a live connection: retried
    vi.advanceTimersByTime(1000);
    expect(link.take().map((s) => s.event)).toEqual(['run:needs-operator']);
  });

  it('a control report resolves once the hub took it, or once it will never be sent: superseded unsent, refused for good, disposed', async () => {
    const link = new ManualLink();
    const { r } = reporter(link);
    r.reportStarted();
    link.take()[0]!.ack(ok());
    const done: number[] = [];
    const report = (seq: number) => void r.reportControlApplied({ runId: RUN, seq, effective: 'paused-hard', appliedAt: seq }).then(() => done.push(seq));
    const turns = async () => {
      for (let i = 0; i < 5; i++) await Promise.resolve();
    };

    report(1); // in flight
    report(2);
    report(3); // supersedes 2, which was never sent
    await turns();
    expect(done).toEqual([2]);
    const [first] = link.take();
    expect(first!.payload.seq).toBe(1);
    first!.ack(ok());
    await turns();
    expect(done).toEqual([2, 1]);
    const [third] = link.take();
    expect(third!.payload.seq).toBe(3);
    third!.ack({ ok: false, error: { code: 'UNAVAILABLE', message: 'db down' } }); // transient: not done
    await turns();
    expect(done).toEqual([2, 1]);
    vi.advanceTimersByTime(1000);
    link.take()[0]!.ack({ ok: false, error: { code: 'STATE_CONFLICT', message: 'run ended' } }); // refused for good
    await turns();
    expect(done).toEqual([2, 1, 3]);
    report(4);
    expect(link.take().map((s) => s.payload.seq)).toEqual([4]);
    r.dispose();
    await turns();
    expect(done).toEqual([2, 1, 3, 4]);
  });

  it('a refusal for a run that moved on (cancelled, not this worker’s) is a warning; one the hub cannot read is an error', () => {
    const link = new ManualLink();
    const { logger, text } = capturedLogger();
    const r = new RunReporter({ runId: RUN, link, logger, batcher: { flushMs: 16 }, onSettled: vi.fn(), retryMs: 1000 });
    r.reportStarted();
    link.take()[0]!.ack(ok());
    r.reportControlApplied({ runId: RUN, seq: 1, effective: 'paused-hard', appliedAt: 1 });
    link.take()[0]!.ack({ ok: false, error: { code: 'FORBIDDEN', message: `run ${RUN} is not (any more) this worker's: stop it` } });
    r.reportControlApplied({ runId: RUN, seq: 2, effective: 'agent', appliedAt: 2 });
    link.take()[0]!.ack({ ok: false, error: { code: 'VALIDATION', message: 'invalid control:applied payload' } });
    const lines = text().trim().split('\n').map((l) => JSON.parse(l) as { level: number; msg: string; error?: { code: string } });
    const refusals = lines.filter((l) => l.msg === 'hub refused a report').map((l) => [l.error?.code, l.level]);
    expect(refusals).toEqual([['FORBIDDEN', 40], ['VALIDATION', 50]]);
    expect(link.take()).toEqual([]); // neither is sent again
  });

  it('a run that never started reports only its exit', () => {
    const link = new ManualLink();
    const { r } = reporter(link);
    r.reportExited({ exitCode: null, error: 'could not start the run: tmux not found' });
    expect(link.pending()).toEqual(['run:exited']);
    expect(link.sent[0]!.payload).toEqual({ runId: RUN, exitCode: null, error: 'could not start the run: tmux not found' });
  });
});
