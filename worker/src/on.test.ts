import { randomUUID } from 'node:crypto';
import { io as connect, type Socket as ClientSocket } from 'socket.io-client';
import type { Socket } from 'socket.io';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AppError, NAMESPACE, type Ack } from '@handoff/shared';
import { MAX_INBOUND_CHARS, on, type InboundEvent, type InboundPayload } from './on.js';
import { capturedLogger, until } from './testing/shares.js';
import { startSocketHub, type SocketHub } from './testing/socket-hub.js';

// A real socket.io server plays the hub and pushes to a real socket.io client, as the hub
// does to a worker; `on()` sits on the client as in the worker.

let hub: SocketHub;
let client: ClientSocket;
let pushed: Socket;
let logs: ReturnType<typeof capturedLogger>;
const seen: Array<{ event: string; payload: unknown }> = [];

beforeEach(async () => {
  hub = await startSocketHub();
  client = connect(`${hub.url}${NAMESPACE.worker}`, { transports: ['websocket'], forceNew: true, reconnection: false });
  await until(() => hub.sockets.length === 1, 'the client to connect');
  pushed = hub.sockets[0]!;
  logs = capturedLogger();
  seen.length = 0;
});
afterEach(async () => {
  client.close();
  await hub.close();
});

/** Registers a handler that records what it got and answers `{}` (or nothing for an event the hub does not await). */
function record<E extends InboundEvent>(event: E): void {
  on(client, event, logs.logger, (payload: InboundPayload<E>) => {
    seen.push({ event, payload });
    return {} as never;
  });
}

const push = (event: string, payload: unknown) => pushed.timeout(20_000).emitWithAck(event, payload) as Promise<Ack<unknown>>;
const logLines = () => logs.text().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
const runId = randomUUID();
const message = () => ({ runId, messageId: randomUUID(), ts: '2026-01-01T00:00:00.000Z', actor: 'alice', message: 'hello there' });
const change = { runId, seq: 3, state: 'paused', mode: 'soft', softGraceMs: 10_000, by: null };

describe('the worker-side on()', () => {
  it('hands a valid event to its handler parsed (schema defaults applied) and acks what the handler returns', async () => {
    record('control:apply');
    expect(await push('control:apply', change)).toEqual({ ok: true, data: {} });
    expect(seen).toEqual([{ event: 'control:apply', payload: { ...change, handback: null } }]);
  });

  it('refuses wrong types and missing fields with a VALIDATION ack naming the field; the handler never runs', async () => {
    record('run:message');
    record('term:input');
    const wrongType = await push('run:message', { ...message(), runId: 42 });
    expect(wrongType).toMatchObject({ ok: false, error: { code: 'VALIDATION', message: expect.stringMatching(/^invalid run:message payload at "runId": /) } });
    const missing = await push('term:input', { runId });
    expect(missing).toMatchObject({ ok: false, error: { code: 'VALIDATION', message: expect.stringMatching(/^invalid term:input payload at "data": /) } });
    expect(await push('run:message', 'not an object')).toMatchObject({ ok: false, error: { code: 'VALIDATION' } });
    expect(await push('run:message', null)).toMatchObject({ ok: false, error: { code: 'VALIDATION' } });
    expect(seen).toEqual([]);
    expect(logLines().filter((l) => l.msg === 'refused a malformed event from the hub').map((l) => l.event)).toEqual(['run:message', 'term:input', 'run:message', 'run:message']);
  });

  it('refuses hostile text (NUL, a lone surrogate, absurd nesting) and never logs the payload', async () => {
    record('term:input');
    record('run:message');
    const nul = await push('term:input', { runId, data: 'ls\u0000SECRET-KEYS' });
    expect(nul).toMatchObject({ ok: false, error: { code: 'VALIDATION', message: 'invalid term:input payload at "data": contains U+0000 (NUL)' } });
    const surrogate = await push('run:message', { ...message(), message: 'SECRET-KEYS \ud800' });
    expect(surrogate).toMatchObject({ ok: false, error: { code: 'VALIDATION', message: expect.stringContaining('lone surrogate') } });
    let deep: unknown = 'SECRET-KEYS';
    for (let i = 0; i < 40; i++) deep = { deeper: deep };
    expect(await push('run:message', { ...message(), extra: deep })).toMatchObject({ ok: false, error: { code: 'VALIDATION', message: expect.stringContaining('nested deeper') } });
    expect(seen).toEqual([]);
    expect(logs.text()).not.toContain('SECRET-KEYS');
  });

  it('refuses an oversized payload before parsing it, even when the extra bulk is a field no schema names', async () => {
    record('run:message');
    record('term:input');
    const bulky = await push('run:message', { ...message(), padding: 'x'.repeat(MAX_INBOUND_CHARS + 1) });
    expect(bulky).toMatchObject({ ok: false, error: { code: 'VALIDATION', message: `invalid run:message payload: larger than ${MAX_INBOUND_CHARS} characters` } });
    const manyKeys = await push('run:message', { ...message(), ...Object.fromEntries(Array.from({ length: 4096 }, (_, i) => [`k${i}`, 'y'.repeat(1024)])) });
    expect(manyKeys).toMatchObject({ ok: false, error: { code: 'VALIDATION', message: expect.stringContaining('larger than') } });
    // Within the bound, the schema's own limits apply.
    const long = await push('term:input', { runId, data: 'k'.repeat(4097) });
    expect(long).toMatchObject({ ok: false, error: { code: 'VALIDATION', message: expect.stringMatching(/^invalid term:input payload at "data": /) } });
    expect(seen).toEqual([]);
    // The connection is still up and the next good event goes through.
    expect(await push('run:message', message())).toEqual({ ok: true, data: {} });
    expect(seen).toHaveLength(1);
  });

  it('an event the hub does not await: a malformed one is logged and dropped, a good one reaches the handler', async () => {
    record('run:cancel');
    pushed.emit('run:cancel', { runId: 'not-a-uuid' });
    pushed.emit('run:cancel', {});
    pushed.emit('run:cancel', { runId });
    await until(() => seen.length === 1, 'the good cancel');
    expect(seen).toEqual([{ event: 'run:cancel', payload: { runId } }]);
    expect(logLines().filter((l) => l.msg === 'refused a malformed event from the hub' && l.event === 'run:cancel')).toHaveLength(2);
    expect(client.connected).toBe(true);
  });

  it('a refusing handler’s AppError is the ack; an unexpected failure is INTERNAL, logged once with its cause, and leaks nothing', async () => {
    on(client, 'run:message', logs.logger, () => {
      throw new AppError({ code: 'NOT_FOUND', message: 'run is not running on this worker' });
    });
    on(client, 'term:input', logs.logger, async () => {
      throw new Error('EIO at /secret/path');
    });
    expect(await push('run:message', message())).toEqual({ ok: false, error: { code: 'NOT_FOUND', message: 'run is not running on this worker' } });
    const failed = await push('term:input', { runId, data: 'ls\r' });
    expect(failed).toEqual({ ok: false, error: { code: 'INTERNAL', message: 'the worker failed to handle term:input' } });
    const errors = logLines().filter((l) => l.msg === 'inbound event handler failed');
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ event: 'term:input', err: { message: 'EIO at /secret/path' } });
    expect(client.connected).toBe(true);
  });
});
