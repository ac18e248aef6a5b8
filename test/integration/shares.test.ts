import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LiveSession } from '@handoff/shared';
import { em } from '../../server/src/infra/db/orm.js';
import { api, emitAck, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { pidsMatching, untilNoProcess } from '../support/processes.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

// STAND-INS: no tmate relay and no upterm server are reachable here, so the success paths
// run against test/fixtures/fake-tmate and fake-upterm, which speak the CLI subset the
// worker uses. The failure paths use the real tmate binary.
const FAKE_TMATE = path.resolve('test/fixtures/fake-tmate');
const FAKE_UPTERM = path.resolve('test/fixtures/fake-upterm');
const RW_STRINGS = ['rw-SECRET-FAKE', 'SECRET-FAKE-'];

describe('external shares: real hub + real worker process + real tmux (tmate/upterm stand-ins)', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let admin: string;
  let operator: string;
  let viewer: Viewer;
  const sessions = new Map<string, LiveSession>();

  beforeAll(async () => {
    hub = await startTestHub({
      env: {
        LIVE_PROVIDER_START_TIMEOUT: '3s', SWEEP_INTERVAL: '100ms', LIVE_MAX_SHARES_PER_RUN: '3', LIVE_MAX_CONCURRENT_PER_WORKER: '8',
        // Nothing listens on port 9 here: real tmate can never reach this relay.
        LIVE_RELAY_HOST: '127.0.0.1', LIVE_RELAY_PORT: '9',
      },
    });
    admin = await hub.token('admin');
    operator = await hub.token('operator');
    viewer = await Viewer.connect(hub.url, admin);
    viewer.socket.on('session:updated', (s: LiveSession) => sessions.set(s.id, s));
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`shares-${randomBytes(3).toString('hex')}`), capacity: 6, env: { TMATE_BIN: FAKE_TMATE, UPTERM_BIN: FAKE_UPTERM } });
  });
  afterAll(async () => {
    viewer?.close();
    await worker?.stop();
    await hub?.stop();
  });

  const running = async (script = 'while true; do echo tick; sleep 0.1; done') => {
    const res = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script } });
    const runId = res.body.id as string;
    await emitAck(viewer.socket, 'run:subscribe', { runId });
    await viewer.untilStatus(runId, ['running']);
    return runId;
  };
  const share = async (runId: string, provider: 'tmate' | 'upterm', extra: { switch?: boolean } = {}) => {
    const res = await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session`, { provider, ...extra });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    expect(res.body.session.status).toBe('STARTING');
    return res.body.session as LiveSession;
  };
  const until = (id: string, status: string, ms = 8000) => viewer.until(`session ${id} ${status}`, () => (sessions.get(id)?.status === status ? sessions.get(id) : undefined), ms);
  const shareDir = (sessionId: string) => path.join(worker.runDir, 'shares', sessionId);

  it('tmate: READY with the RO attach strings; RW only sealed at rest, never in responses or logs', async () => {
    const runId = await running();
    const s = await share(runId, 'tmate');
    const ready = await until(s.id, 'READY');
    expect(ready.attachRo).toMatchObject({ tmate_ssh_ro: 'ssh ro-FAKE@fake.relay' });
    expect(ready.readyAt).not.toBeNull();
    const [row] = await em(hub.orm).execute<{ attach_rw_enc: string }[]>('select attach_rw_enc from live_sessions where id = ?', [s.id]);
    expect(row!.attach_rw_enc).toMatch(/^v1\./);
    const visible = JSON.stringify([
      (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/live-sessions`)).body,
      (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}`)).body,
      (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events?limit=1000`)).body,
      [...sessions.values()],
      row,
    ]);
    for (const secret of RW_STRINGS) {
      expect(visible).not.toContain(secret);
      expect(hub.logs()).not.toContain(secret);
      expect(worker.output()).not.toContain(secret);
    }
    // Revoke: the worker kills the share's process group; the run keeps running.
    const revoked = await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session/revoke`, { provider: 'tmate', reason: 'done sharing' });
    expect(revoked.body.session).toMatchObject({ status: 'REVOKED', endReason: 'done sharing' });
    expect(await untilNoProcess(shareDir(s.id))).toEqual([]);
    await viewer.until('share dir removed', () => !existsSync(shareDir(s.id)) || undefined, 5000);
    expect(viewer.runs.get(runId)?.status).toBe('running');
    await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('upterm: READY; switching to tmate ends it (switched) and kills its process', async () => {
    const runId = await running();
    const up = await share(runId, 'upterm');
    const ready = await until(up.id, 'READY');
    expect(Object.values(ready.attachRo ?? {}).join(' ')).toMatch(/ssh /);
    const tm = await share(runId, 'tmate', { switch: true });
    const ended = await until(up.id, 'ENDED');
    expect(ended.endReason).toBe('switched');
    await until(tm.id, 'READY');
    expect(await untilNoProcess(shareDir(up.id))).toEqual([]);
    // The run ends: every share ends with it and nothing of them is left.
    await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {});
    expect((await until(tm.id, 'ENDED')).endReason).toBe('run-cancelled');
    expect(await untilNoProcess(shareDir(tm.id))).toEqual([]);
  });

  it('chaos ×5: a SIGKILLed share server → ERROR within 2 s, audited, no orphan, the run goes on', async () => {
    const runId = await running();
    const took: number[] = [];
    for (let round = 0; round < 5; round++) {
      const s = await share(runId, 'tmate');
      await until(s.id, 'READY');
      // Only the share's server dies; its pane process is left orphaned for the worker to reap.
      const servers = pidsMatching(`__server ${shareDir(s.id)}`);
      expect(servers).toHaveLength(1);
      expect(pidsMatching(shareDir(s.id)).length).toBeGreaterThan(1);
      const before = (viewer.live.get(runId) ?? []).length;
      const t0 = Date.now();
      process.kill(servers[0]!, 'SIGKILL');
      const errored = await until(s.id, 'ERROR', 5000);
      took.push(Date.now() - t0);
      expect(errored.errorMessage).toMatch(/exit|died|unexpected/i);
      expect(await untilNoProcess(shareDir(s.id))).toEqual([]);
      await emitAck(viewer.socket, 'term:subscribe', { runId });
      await viewer.until('run output keeps flowing', () => (viewer.live.get(runId) ?? []).length > before + 2);
      expect(viewer.runs.get(runId)?.status).toBe('running');
      const audit = await em(hub.orm).execute<{ action: string }[]>('select action from audit_events where session_id = ? order by seq', [s.id]);
      expect(audit.map((a) => a.action)).toEqual(['session.create', 'session.ready', 'session.error']);
    }
    console.log(`share SIGKILL → session ERROR after ${took.join(', ')} ms`);
    expect(Math.max(...took)).toBeLessThan(2000);
    await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('chaos ×5: three concurrent shares (three runs); killing two leaves the third working', async () => {
    const runs = [await running(), await running(), await running()];
    for (let round = 0; round < 5; round++) {
      const shares = [];
      for (const r of runs) shares.push(await share(r, 'tmate'));
      for (const s of shares) await until(s.id, 'READY');
      for (const s of shares.slice(0, 2)) for (const pid of pidsMatching(`__server ${shareDir(s.id)}`)) process.kill(pid, 'SIGKILL');
      for (const s of shares.slice(0, 2)) await until(s.id, 'ERROR', 5000);
      await new Promise((r) => setTimeout(r, 300));
      expect(sessions.get(shares[2]!.id)?.status).toBe('READY');
      expect(pidsMatching(`__server ${shareDir(shares[2]!.id)}`)).toHaveLength(1);
      for (const s of shares.slice(0, 2)) expect(await untilNoProcess(shareDir(s.id))).toEqual([]);
      await api(hub.url, admin, 'POST', `/api/task-runs/${runs[2]}/live-session/revoke`, { provider: 'tmate' });
      expect(await untilNoProcess(shareDir(shares[2]!.id))).toEqual([]);
    }
    for (const r of runs) await api(hub.url, admin, 'POST', `/api/task-runs/${r}/cancel`, {});
  });

  it('real tmate with an unreachable relay → ERROR within the start timeout; the run finishes normally', async () => {
    await worker.stop();
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`real-${randomBytes(3).toString('hex')}`), env: { UPTERM_BIN: '/nonexistent/upterm' } });
    const runId = await running('for i in $(seq 1 40); do echo step $i; sleep 0.15; done; exit 7');
    const t0 = Date.now();
    const s = await share(runId, 'tmate');
    const failed = await until(s.id, 'ERROR', 10_000);
    const took = Date.now() - t0;
    expect(took).toBeLessThan(3000 + 2000);
    expect(failed.errorMessage).toMatch(/relay|timed out|within/i);
    console.log(`real tmate, unreachable relay: ERROR after ${took} ms ("${failed.errorMessage}")`);
    const done = await viewer.untilStatus(runId, ['failed', 'succeeded'], 20_000);
    expect(done.exitCode).toBe(7);
    expect(await untilNoProcess(shareDir(s.id))).toEqual([]);
  });

  it('a missing provider binary → ERROR at once with a clear message', async () => {
    const runId = await running();
    const t0 = Date.now();
    const s = await share(runId, 'upterm');
    const failed = await until(s.id, 'ERROR', 5000);
    expect(failed.errorMessage).toMatch(/upterm.*(not installed|not found|missing)/i);
    expect(Date.now() - t0).toBeLessThan(2000);
    await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });
});
