import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'socket.io';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { ManualClock, type Ack } from '@handoff/shared';
import { loadConfig } from './config.js';
import { ABANDON_FILE, LEASE_FILE, LOCK_FILE } from './run-dir.js';
import { findRunDirs } from './stale-runs.js';
import { capturedLogger, until } from './testing/shares.js';
import { startSocketHub, type SocketHub } from './testing/socket-hub.js';
import { Worker } from './worker.js';

// The whole worker — its parts composed, real tmux runs — against a hub node that is a real
// socket.io server scripted here (the real hub is in test/integration/worker.test.ts). The
// worker's own timers run on a ManualClock: heartbeats and the lease move only when the test
// moves time.

let runDir: string;
let hub: SocketHub;
const got: Record<string, unknown[]> = {};
const cleanups: Array<() => Promise<unknown> | unknown> = [];

beforeEach(async () => {
  runDir = await mkdtemp(join(tmpdir(), 'handoff-worker-unit-'));
  for (const k of Object.keys(got)) delete got[k];
  hub = await startSocketHub((socket: Socket) => {
    const answer = (event: string, data: (payload: any) => unknown) =>
      socket.on(event, (payload: unknown, ack: (a: Ack<unknown>) => void) => {
        (got[event] ??= []).push(payload);
        ack({ ok: true, data: data(payload) });
      });
    answer('worker:hello', () => ({ workerId: 'w-1', name: 'unit', heartbeatIntervalMs: 2000, abandonAfterMs: 12_345, runs: [] }));
    answer('worker:heartbeat', () => ({}));
    answer('run:started', () => ({}));
    answer('run:output', (p: { frames: Array<{ seq: number }> }) => ({ lastSeq: p.frames.at(-1)!.seq }));
    answer('run:exited', () => ({}));
  });
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await hub.close();
  await rm(runDir, { recursive: true, force: true });
});

async function startWorker(clock: ManualClock) {
  const logs = capturedLogger();
  const config = loadConfig({ HANDOFF_URL: hub.url, HANDOFF_WORKER_TOKEN: 'unit-worker-token-SECRET', WORKER_RUN_DIR: runDir, WORKER_CAPACITY: '1' });
  const worker = new Worker({ config, baseEnv: { PATH: process.env.PATH }, logger: logs.logger, clock, killGraceMs: 300, stopTimeoutMs: 2000 });
  cleanups.push(() => worker.stop());
  await worker.start();
  await until(() => worker.connected, 'the greeting');
  return { worker, logs };
}

const push = (event: string, payload: unknown) => hub.sockets.at(-1)!.timeout(5000).emitWithAck(event, payload) as Promise<Ack<unknown>>;

it('records the hub’s abandon threshold, keeps the lease and heartbeats on its clock, and stops without leaving a timer', async () => {
  const clock = new ManualClock();
  const { worker, logs } = await startWorker(clock);
  expect(got['worker:hello']).toEqual([{ capacity: 1, runs: [], version: expect.any(String) }]);
  expect(readFileSync(join(runDir, ABANDON_FILE), 'utf8')).toBe('12345');
  const lease = () => statSync(join(runDir, LEASE_FILE)).mtimeMs;
  expect(lease()).toBe(clock.now());

  clock.advance(1999);
  expect(lease()).toBe(clock.now() - 999); // touched every second
  await new Promise((r) => setTimeout(r, 50));
  expect(got['worker:heartbeat']).toBeUndefined();
  clock.advance(1);
  await until(() => got['worker:heartbeat']?.length === 1, 'the first heartbeat', 1000); // the hub's interval is 2 s of real time: only the clock can make it
  expect(got['worker:heartbeat']).toEqual([{ activeRuns: 0, shares: [] }]);
  clock.advance(4000);
  await until(() => got['worker:heartbeat']?.length === 3, 'two more heartbeats', 1000);

  await worker.stop();
  expect(clock.pending).toBe(0); // heartbeat, lease and reconnect timers all gone
  expect(existsSync(join(runDir, LOCK_FILE))).toBe(false);
  expect(logs.text()).not.toContain('SECRET');
});

it('refuses a malformed assignment without touching anything, runs a good one to its end, and refuses past capacity', async () => {
  const clock = new ManualClock();
  const { worker } = await startWorker(clock);
  const script = { script: 'echo unit-$((6*7))' };

  const bad = await push('run:assign', { runId: '../../etc', command: script, cwd: null, env: {} });
  expect(bad).toMatchObject({ ok: false, error: { code: 'VALIDATION', message: expect.stringMatching(/^invalid run:assign payload at "runId": /) } });
  const hostile = await push('run:assign', { runId: randomUUID(), command: script, cwd: null, env: { X: 'a\u0000b' } });
  expect(hostile).toMatchObject({ ok: false, error: { code: 'VALIDATION', message: expect.stringContaining('U+0000') } });
  expect(await findRunDirs(runDir)).toEqual([]);
  expect(worker.activeRunIds).toEqual([]);

  const runId = randomUUID();
  const long = randomUUID();
  expect(await push('run:assign', { runId: long, command: { script: 'sleep 30' }, cwd: null, env: {} })).toEqual({ ok: true, data: {} });
  expect(await push('run:assign', { runId, command: script, cwd: null, env: {} })).toMatchObject({ ok: false, error: { code: 'LIMIT_REACHED' } });
  expect(await push('run:assign', { runId: long, command: { script: 'sleep 30' }, cwd: null, env: {} })).toEqual({ ok: true, data: {} }); // a re-push: same run
  hub.sockets.at(-1)!.emit('run:cancel', { runId: long });
  await until(() => got['run:exited']?.length === 1, 'the cancelled run’s exit');

  expect(await push('run:assign', { runId, command: script, cwd: null, env: {} })).toEqual({ ok: true, data: {} });
  await until(() => (got['run:exited'] ?? []).some((e) => (e as { runId: string }).runId === runId), 'the run’s exit');
  const output = (got['run:output'] as Array<{ runId: string; frames: Array<{ data: string; t: number }> }>).filter((o) => o.runId === runId).flatMap((o) => o.frames);
  expect(output.map((f) => f.data).join('')).toContain('unit-42');
  expect(output.every((f) => f.t === 0)).toBe(true); // frames' time is the worker's clock, which the test did not move
  expect(got['run:exited']).toContainEqual({ runId, exitCode: 0 });
});
