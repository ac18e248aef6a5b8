import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { OperatorMessage, Run } from '@handoff/shared';
import { em } from '../../server/src/infra/db/orm.js';
import { api, emitAck, eventually, joinFrames, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { pidsMatching, untilNoProcess } from '../support/processes.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil((p / 100) * xs.length) - 1)]!;
/** Process state letter from /proc (R, S, T = stopped, …). */
const stateOf = (pid: number) => readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').charAt(0);

describe('control and messages: real hub + real worker + real tmux', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let operator: string;
  let viewer: Viewer;

  beforeAll(async () => {
    hub = await startTestHub({ env: { PAUSE_SOFT_GRACE: '800ms', RATE_LIMIT_REST_BURST: '5000', RATE_LIMIT_REST_PER_SEC: '5000' } });
    operator = await hub.token('operator');
    viewer = await Viewer.connect(hub.url, await hub.token('observer'));
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`ctl-${randomBytes(3).toString('hex')}`), capacity: 4 });
  });
  afterAll(async () => {
    viewer?.close();
    await worker?.stop();
    await hub?.stop();
  });

  const start = async (script: string) => {
    const res = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script } });
    const runId = res.body.id as string;
    await emitAck(viewer.socket, 'run:subscribe', { runId });
    await emitAck(viewer.socket, 'term:subscribe', { runId });
    await viewer.untilStatus(runId, ['running']);
    return runId;
  };
  const control = (runId: string, body: object) => api(hub.url, operator, 'POST', `/api/task-runs/${runId}/control`, body);
  const applied = (runId: string, seq: number) => viewer.until(`seq ${seq} applied`, () => { const r = viewer.runs.get(runId); return r && r.control.appliedSeq >= seq ? r : undefined; });
  const output = (runId: string) => joinFrames([...new Map((viewer.live.get(runId) ?? []).map((f) => [f.seq, f])).values()]);
  const appliedRows = async (runId: string) => em(hub.orm).execute<{ metadata: { seq: number; effective: string; advanced: boolean; delayMs: number | null } }[]>(
    `select metadata from audit_events where run_id = ? and action = 'control.applied' order by seq`, [runId]);
  const quiet = async (runId: string, ms: number) => {
    const before = output(runId).length;
    await new Promise((r) => setTimeout(r, ms));
    return output(runId).length === before;
  };
  /**
   * Paused: what was printed before the stop may still be on its way (sealed by the worker,
   * then delivered under load); once nothing has arrived for 200 ms (within 5 s), nothing
   * more may arrive for `ms`. A run still printing every 100 ms never gets that far.
   */
  const silent = async (runId: string, ms: number) => {
    for (const deadline = Date.now() + 5000; Date.now() < deadline && !(await quiet(runId, 200)); );
    return quiet(runId, ms);
  };

  it('hard pause stops the process group (state T), resume continues it; illegal actions are STATE_CONFLICT', async () => {
    const marker = `ctl-hard-${randomBytes(3).toString('hex')}`;
    const runId = await start(`while true; do echo "tick ${marker}"; sleep 0.1; done`);
    expect((await control(runId, { action: 'resume' })).body.error.code).toBe('STATE_CONFLICT');
    const paused = await control(runId, { action: 'pause', mode: 'hard' });
    expect(paused.body.control).toMatchObject({ state: 'paused', mode: 'hard', seq: 1 });
    await applied(runId, 1);
    const shells = pidsMatching(`tick ${marker}`);
    expect(shells.length).toBeGreaterThan(0);
    expect(shells.map(stateOf)).toEqual(shells.map(() => 'T'));
    expect(await silent(runId, 600)).toBe(true);
    expect((await appliedRows(runId)).at(-1)!.metadata).toMatchObject({ seq: 1, effective: 'paused-hard', advanced: true });
    expect((await control(runId, { action: 'pause' })).body.error.code).toBe('STATE_CONFLICT');

    await control(runId, { action: 'resume' });
    await applied(runId, 2);
    await eventually('output again', async () => !(await quiet(runId, 300)));
    expect(pidsMatching(`tick ${marker}`).map(stateOf)).not.toContain('T');
    await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('soft pause halts the agent at its next checkpoint; resume releases it', async () => {
    const runId = await start('i=0; while true; do handoff-agent checkpoint; i=$((i+1)); echo "step $i"; sleep 0.1; done');
    await viewer.until('agent stepping', () => output(runId).includes('step 3'));
    await control(runId, { action: 'pause' });
    await applied(runId, 1);
    expect((await appliedRows(runId)).at(-1)!.metadata.effective).toBe('paused-soft');
    expect(await silent(runId, 600)).toBe(true);
    await control(runId, { action: 'resume' });
    await applied(runId, 2);
    const steps = output(runId).match(/step \d+/g)!.length;
    await viewer.until('agent stepping again', () => output(runId).match(/step \d+/g)!.length > steps + 2);
    await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('a soft pause escalates to hard when the agent never reaches a checkpoint', async () => {
    const runId = await start('while true; do echo busy; sleep 0.1; done');
    await control(runId, { action: 'pause', mode: 'soft' });
    await applied(runId, 1);
    expect((await appliedRows(runId)).at(-1)!.metadata.effective).toBe('paused-hard');
    expect(await silent(runId, 500)).toBe(true);
    // Cancel while paused still terminates the run cleanly.
    await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
    const done = await viewer.untilStatus(runId, ['cancelled']);
    expect(done.status).toBe('cancelled');
    await viewer.until('exit recorded', () => viewer.runs.get(runId)?.exitCode != null);
  });

  it('a pause sent while the worker is disconnected is applied exactly once on reconnect', async () => {
    const marker = `ctl-away-${randomBytes(3).toString('hex')}`;
    const runId = await start(`while true; do echo "tick ${marker}"; sleep 0.1; done`);
    for (const s of hub.io.of('/worker').sockets.values()) s.conn.close();
    const res = await control(runId, { action: 'pause', mode: 'hard' });
    expect(res.body.control.seq).toBe(1);
    await applied(runId, 1);
    const rows = (await appliedRows(runId)).filter((r) => r.metadata.seq === 1 && r.metadata.advanced);
    expect(rows).toHaveLength(1);
    expect(pidsMatching(`tick ${marker}`).map(stateOf)).toContain('T');
    await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
    expect(await untilNoProcess(marker)).toEqual([]);
  });

  it('messages reach observers live and the inbox in order, once each, across a worker reconnect; they never pause the run', async () => {
    const runId = await start('while true; do echo working; sleep 0.1; done');
    const seen: OperatorMessage[] = [];
    const delivered: OperatorMessage[] = [];
    viewer.socket.on('message:created', (m: OperatorMessage) => seen.push(m));
    viewer.socket.on('message:updated', (m: OperatorMessage) => delivered.push(m));
    const send = (m: string) => api(hub.url, operator, 'POST', `/api/task-runs/${runId}/operator-messages`, { message: m });
    for (const m of ['first', 'second', 'third']) expect((await send(m)).status).toBe(201);
    for (const s of hub.io.of('/worker').sockets.values()) s.conn.close();
    for (const m of ['fourth', 'fifth ✓']) expect((await send(m)).status).toBe(201);
    const inbox = path.join(worker.runDir, runId, 'inbox.jsonl');
    const lines = () => (existsSync(inbox) ? readFileSync(inbox, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []);
    await eventually('all five delivered', async () => lines().length >= 5 && (await api(hub.url, operator, 'GET', `/api/task-runs/${runId}/operator-messages`)).body.messages.every((m: OperatorMessage) => m.deliveredAt));
    await new Promise((r) => setTimeout(r, 300));
    expect(lines().map((l) => l.message)).toEqual(['first', 'second', 'third', 'fourth', 'fifth ✓']);
    expect(lines()[0]).toMatchObject({ actor: expect.any(String), ts: expect.any(String) });
    expect(seen.filter((m) => m.runId === runId).map((m) => m.message)).toEqual(['first', 'second', 'third', 'fourth', 'fifth ✓']);
    // Each delivery is pushed to the run room once, with its deliveredAt.
    const mine = delivered.filter((m) => m.runId === runId);
    expect(mine.map((m) => m.message).sort()).toEqual(['fifth ✓', 'first', 'fourth', 'second', 'third']);
    expect(mine.every((m) => m.deliveredAt !== null)).toBe(true);
    expect(viewer.runs.get(runId)?.control.state).toBe('agent');
    for (const bad of [{ message: '' }, { message: 'x'.repeat(4001) }, { msg: 'x' }]) expect((await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/operator-messages`, bad)).body.error.code).toBe('VALIDATION');
    await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('a new message never overtakes an older one the worker has not acked yet', async () => {
    // The state a reconnect leaves for a moment: the worker is back in its room, the messages
    // sent while it was away are still undelivered (its redelivery has not run yet). The row is
    // written directly to hold that state; the next message must bring it along, in front.
    const runId = await start('echo up; while true; do sleep 0.2; done');
    // Output flows only once the hub acked run:started, which it does after its redelivery.
    await emitAck(viewer.socket, 'term:subscribe', { runId });
    await viewer.until('first output', () => joinFrames(viewer.live.get(runId) ?? []).includes('up'));
    await em(hub.orm).execute(
      `insert into operator_messages (id, run_id, actor_id, message, created_at, delivered_at)
       select gen_random_uuid(), r.id, r.created_by::uuid, 'sent while away', now() - interval '1 second', null from runs r where r.id = ?`,
      [runId],
    );
    expect((await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/operator-messages`, { message: 'sent now' })).status).toBe(201);
    const inbox = path.join(worker.runDir, runId, 'inbox.jsonl');
    const lines = () => (existsSync(inbox) ? readFileSync(inbox, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l).message as string) : []);
    await eventually('both in the inbox', async () => lines().length >= 2);
    expect(lines()).toEqual(['sent while away', 'sent now']);
    const stored = (await api(hub.url, operator, 'GET', `/api/task-runs/${runId}/operator-messages`)).body.messages as OperatorMessage[];
    await eventually('both acked', async () => (await api(hub.url, operator, 'GET', `/api/task-runs/${runId}/operator-messages`)).body.messages.every((m: OperatorMessage) => m.deliveredAt));
    expect(stored.map((m) => m.message)).toEqual(['sent while away', 'sent now']);
    await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('needs-operator: the agent asks, dashboards see it at once, an operator dismisses it', async () => {
    const asks: Array<{ runId: string; reason: string }> = [];
    viewer.socket.on('run:needs-operator', (n: { runId: string; reason: string }) => asks.push(n));
    const runId = await start('handoff-agent request-operator "stuck on a flaky test"; while true; do sleep 0.2; done');
    await viewer.until('needs operator', () => asks.find((a) => a.runId === runId));
    const flagged: Run = await viewer.until('flag on run', () => viewer.runs.get(runId)?.needsOperator ? viewer.runs.get(runId) : undefined);
    expect(flagged.needsOperator?.reason).toBe('stuck on a flaky test');
    const dismissed = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/needs-operator/dismiss`, {});
    expect(dismissed.body.needsOperator).toBeNull();
    await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('control push latency (REST call → worker applied), beside the bare socket.io ack round trip', async () => {
    const runId = await start('while true; do sleep 0.2; done');
    const bare: number[] = [];
    for (let i = 0; i < 100; i++) {
      const t = performance.now();
      await emitAck(viewer.socket, 'approvals:subscribe', {});
      bare.push(performance.now() - t);
    }
    const push: number[] = [];
    for (let i = 0; i < 100; i++) {
      const t = performance.now();
      const res = await control(runId, i % 2 ? { action: 'resume' } : { action: 'pause', mode: 'hard' });
      await applied(runId, res.body.control.seq);
      push.push(performance.now() - t);
    }
    const rows = await appliedRows(runId);
    const hubDelays = rows.map((r) => r.metadata.delayMs).filter((d): d is number => d !== null);
    console.log(
      `control push, n=100: REST→applied p50 ${percentile(push, 50).toFixed(1)} ms, p99 ${percentile(push, 99).toFixed(1)} ms; ` +
        `bare socket.io ack p50 ${percentile(bare, 50).toFixed(2)} ms, p99 ${percentile(bare, 99).toFixed(2)} ms; ` +
        `ratio p50 ${(percentile(push, 50) / percentile(bare, 50)).toFixed(1)}×; hub-recorded push→applied p50 ${percentile(hubDelays, 50)} ms`,
    );
    expect(push).toHaveLength(100);
    await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });
});
