import type { Socket } from 'socket.io';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock, type Ack } from '@handoff/shared';
import { HubConnection, reconnectDelay } from './hub-connection.js';
import type { ResponseOf } from './hub-link.js';
import { capturedLogger, until } from './testing/shares.js';
import { startSocketHub, type SocketHub } from './testing/socket-hub.js';

// The hub nodes are real socket.io servers on port 0 scripted by each test; the worker's
// timers (reconnect backoff, heartbeat) run on a ManualClock, so no test waits them out.

const hubs: SocketHub[] = [];
const connections: HubConnection[] = [];
afterEach(async () => {
  for (const c of connections.splice(0)) c.close();
  await Promise.all(hubs.splice(0).map((h) => h.close()));
});

const welcome: ResponseOf<'worker:hello'> = { workerId: 'w-1', name: 'worker one', heartbeatIntervalMs: 3000, abandonAfterMs: 69_000, runs: [] };

/** A hub node that answers the hello and the heartbeats, and records them. */
async function node(refuse = false) {
  const hellos: unknown[] = [];
  const beats: unknown[] = [];
  const hub = await startSocketHub((socket: Socket) => {
    socket.on('worker:hello', (payload: unknown, ack: (a: Ack<unknown>) => void) => {
      hellos.push(payload);
      ack({ ok: true, data: welcome });
    });
    socket.on('worker:heartbeat', (payload: unknown, ack: (a: Ack<unknown>) => void) => {
      beats.push(payload);
      ack({ ok: true, data: {} });
    });
  });
  hub.refuse = refuse;
  hubs.push(hub);
  return Object.assign(hub, { hellos, beats });
}

function connection(urls: string[], clock: ManualClock) {
  const logs = capturedLogger();
  const events: string[] = [];
  const c = new HubConnection({
    hubUrls: urls,
    token: 'worker-token-SECRET',
    logger: logs.logger,
    clock,
    ackTimeoutMs: 5000,
    maxReconnectDelayMs: null,
    random: () => 0, // the low end of the jitter: delays are exactly half the base
    hello: () => ({ capacity: 2, runs: [], version: 'test' }),
    onGreeted: (w) => events.push(`greeted ${w.workerId}`),
    onOffline: () => events.push('offline'),
    heartbeat: () => ({ activeRuns: 1, shares: [] }),
    listen: () => {},
  });
  connections.push(c);
  const lines = () => logs.text().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  return { c, events, lines, text: logs.text };
}

/** Waits for the reconnect timer, checks it is not due a millisecond early, fires it and waits for the attempt on `hub`. */
async function nextAttempt(clock: ManualClock, hub: SocketHub, delayMs: number): Promise<void> {
  await until(() => clock.pending === 1, 'the reconnect timer');
  const before = hub.handshakes;
  clock.advance(delayMs - 1);
  expect(clock.pending).toBe(1);
  clock.advance(1);
  expect(clock.pending).toBe(0);
  await until(() => hub.handshakes === before + 1, `an attempt on ${hub.url}`);
}

describe('reconnectDelay', () => {
  it('tries a whole round of nodes quickly, then backs off exponentially per round up to the cap, with jitter between half and all of it', () => {
    const low = (attempt: number) => reconnectDelay(attempt, 3, 5000, () => 0);
    const high = (attempt: number) => reconnectDelay(attempt, 3, 5000, () => 0.999_999);
    expect([0, 1, 2, 3, 4, 5, 6, 9, 12, 15, 18, 21, 60].map(low)).toEqual([50, 50, 50, 125, 125, 125, 250, 500, 1000, 2000, 2500, 2500, 2500]);
    expect([0, 3, 6, 15, 18, 60].map(high)).toEqual([100, 250, 500, 4000, 5000, 5000]);
    // One node: every attempt is a round of its own.
    expect([0, 1, 2, 3].map((a) => reconnectDelay(a, 1, 5000, () => 0))).toEqual([50, 125, 250, 500]);
  });
});

describe('HubConnection', () => {
  it('fails over to the next node in order, on the backoff schedule, and greets the first that accepts', async () => {
    const clock = new ManualClock();
    const [a, b, c] = [await node(true), await node(true), await node()];
    const { c: conn, events, lines, text } = connection([a.url, b.url, c.url], clock);
    conn.connect();
    await until(() => a.handshakes === 1, 'the first attempt, on the first node');
    expect(b.handshakes + c.handshakes).toBe(0);
    await nextAttempt(clock, b, 50);
    await nextAttempt(clock, c, 50);
    await until(() => conn.ready, 'the greeting');
    expect(c.hellos).toEqual([{ capacity: 2, runs: [], version: 'test' }]);
    expect(conn.workerId).toBe('w-1');
    expect(events).toEqual(['greeted w-1']);
    expect(lines().filter((l) => l.msg === 'reconnecting to hub').map((l) => [l.attempt, l.delayMs])).toEqual([[0, 50], [1, 50]]);
    expect(text()).not.toContain('SECRET');
  });

  it('heartbeats at the interval the hub gave, only while greeted', async () => {
    const clock = new ManualClock();
    const hub = await node();
    const { c: conn, events } = connection([hub.url], clock);
    conn.connect();
    await until(() => conn.ready, 'the greeting');
    clock.advance(2999);
    await new Promise((r) => setTimeout(r, 50)); // a heartbeat sent early would have arrived by now
    expect(hub.beats).toEqual([]);
    clock.advance(1);
    await until(() => hub.beats.length === 1, 'the first heartbeat');
    expect(hub.beats[0]).toEqual({ activeRuns: 1, shares: [] });
    clock.advance(3000 * 3);
    await until(() => hub.beats.length === 4, 'three more heartbeats');

    // The hub drops the worker: it goes offline, its heartbeat stops, one reconnect timer waits.
    hub.refuse = true;
    hub.sockets[0]!.disconnect(true);
    await until(() => !conn.ready && clock.pending === 1, 'going offline');
    expect(events).toEqual(['greeted w-1', 'offline']);
    clock.advance(49);
    expect(hub.beats).toHaveLength(4);
  });

  it('after losing its node it tries the others round robin, backing off per failed round', async () => {
    const clock = new ManualClock();
    const [a, b] = [await node(), await node(true)];
    const { c: conn, lines } = connection([a.url, b.url], clock);
    conn.connect();
    await until(() => conn.ready, 'the greeting');
    a.refuse = true;
    a.sockets[0]!.disconnect(true);
    await until(() => !conn.ready, 'going offline'); // until then the pending timer is the heartbeat
    // Greeted attempts restart the count: the next node first, at once, then the backoff.
    await nextAttempt(clock, b, 50);
    await nextAttempt(clock, a, 50);
    await nextAttempt(clock, b, 125);
    await nextAttempt(clock, a, 125);
    await nextAttempt(clock, b, 250);
    await nextAttempt(clock, a, 250);
    // Capped by the hub's heartbeat interval (3000 ms; half of it at this jitter).
    for (const [hub, delay] of [[b, 500], [a, 500], [b, 1000], [a, 1000], [b, 1500], [a, 1500], [b, 1500]] as const) await nextAttempt(clock, hub, delay);
    a.refuse = false;
    await until(() => clock.pending === 1, 'the reconnect timer');
    clock.advance(1500);
    await until(() => conn.ready, 'the greeting on the first node again');
    expect(a.hellos).toHaveLength(2);
    expect(lines().filter((l) => l.msg === 'cannot reach hub; trying the next node')).toHaveLength(13);
  });

  it('close() stops reconnecting and leaves no timer behind', async () => {
    const clock = new ManualClock();
    const hub = await node(true);
    const { c: conn } = connection([hub.url], clock);
    conn.connect();
    await until(() => clock.pending === 1, 'the reconnect timer');
    conn.close();
    expect(clock.pending).toBe(0);
    clock.advance(60_000);
    await new Promise((r) => setTimeout(r, 50));
    expect(hub.handshakes).toBe(1);
  });
});
