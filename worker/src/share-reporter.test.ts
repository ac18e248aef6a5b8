import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ShareReporter } from './share-reporter.js';
import { ManualLink } from './testing/shares.js';

const SESSION = '0190f3a4-0000-7000-8000-0000000000aa';
const ok = { ok: true as const, data: {} };
const RO = { tmate_ssh_ro: 'ssh ro@relay' };
const RW = { tmate_ssh: 'ssh rw@relay' };

function reporter(link: ManualLink) {
  const settled = vi.fn();
  const r = new ShareReporter({ sessionId: SESSION, link, logger: pino({ level: 'silent' }), onSettled: settled, retryMs: 1000 });
  return { r, settled };
}

describe('ShareReporter', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('reports ready, then a later failure, one at a time and in order', () => {
    const link = new ManualLink();
    const { r, settled } = reporter(link);
    r.ready(RO, RW);
    r.failed('share process exited unexpectedly');
    expect(link.sent.map((s) => s.event)).toEqual(['share:ready']); // the failure waits for the ready's ack
    link.take()[0]!.ack(ok);
    const [failed] = link.take();
    expect(failed!.payload).toEqual({ sessionId: SESSION, message: 'share process exited unexpectedly' });
    expect(settled).not.toHaveBeenCalled();
    failed!.ack(ok);
    expect(settled).toHaveBeenCalledOnce();
    expect(r.settled).toBe(true);
  });

  it('drops a ready report not sent yet once the share failed', () => {
    const link = new ManualLink();
    link.ready = false;
    const { r } = reporter(link);
    r.ready(RO, RW);
    r.failed('boom');
    link.ready = true;
    r.resend();
    expect(link.sent.map((s) => s.event)).toEqual(['share:failed']);
  });

  it('waits for a reconnect after a dropped connection, and retries a transient refusal after retryMs', () => {
    const link = new ManualLink();
    const { r } = reporter(link);
    r.ready(RO, RW);
    link.ready = false;
    link.take()[0]!.ack(undefined);
    vi.advanceTimersByTime(5000);
    expect(link.sent).toEqual([]); // offline: nothing until the reconnect
    link.ready = true;
    r.resend();
    link.take()[0]!.ack({ ok: false, error: { code: 'INTERNAL', message: 'db down' } });
    vi.advanceTimersByTime(999);
    expect(link.sent).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(link.sent.map((s) => s.event)).toEqual(['share:ready']);
  });

  it('ignores an answer from before a resend, and a refusal for good settles the report', () => {
    const link = new ManualLink();
    const { r, settled } = reporter(link);
    r.failed('boom');
    const stale = link.take()[0]!;
    r.resend();
    stale.ack(ok); // an older round: ignored
    expect(settled).not.toHaveBeenCalled();
    link.take()[0]!.ack({ ok: false, error: { code: 'NOT_FOUND', message: 'no such session' } });
    expect(settled).toHaveBeenCalledOnce();
  });

  it('says nothing more once disposed (the share was stopped on purpose)', () => {
    const link = new ManualLink();
    const { r } = reporter(link);
    r.ready(RO, RW);
    r.dispose();
    link.take()[0]!.ack(undefined);
    r.failed('late');
    r.resend();
    expect(link.sent).toEqual([]);
  });
});
