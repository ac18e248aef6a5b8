import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { em } from '../../server/src/infra/db/orm.js';
import { verifyAudit } from '../../server/src/audit/audit-log.js';
import { ControlService } from '../../server/src/control/control-service.js';
import { api, emitAck, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { ScriptedWorker } from '../support/scripted-worker.js';

/**
 * The SQL round trips of one control change, end to end (issue 10 item 3): REST pause →
 * push → worker applied → `control:applied` → dashboard. Every statement any pg client of this
 * process sends while a control call runs is counted (the hub is in this process); the
 * bounds fail if a pre-read, a re-read or a separate audit statement comes back.
 * Before this change: 12 for the REST pause (a pre-read, the locked-less read, the update, three audit statements, a second UPDATE from the flush, three re-reads after the push), 10 for `control:applied`.
 */
describe('control change: SQL round trips', () => {
  let hub: TestHub;
  let operator: string;
  let viewer: Viewer;
  let worker: ScriptedWorker;
  const probe = new AsyncLocalStorage<string>();
  const trace: string[] = [];
  const originals: Array<() => void> = [];

  /** Runs a prototype method of ControlService under `label`: its statements are traced. */
  const traceMethod = (name: 'apply' | 'onApplied') => {
    const proto = ControlService.prototype as unknown as Record<string, (...args: unknown[]) => unknown>;
    const original = proto[name]!;
    proto[name] = function (this: unknown, ...args: unknown[]) {
      return probe.run(name, () => original.apply(this, args));
    };
    originals.push(() => (proto[name] = original));
  };

  beforeAll(async () => {
    const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      const label = probe.getStore();
      const text = typeof args[0] === 'string' ? args[0] : (args[0] as { text?: string })?.text;
      if (label) trace.push(`${label}: ${String(text).trim().split(/\s+/).slice(0, 3).join(' ')}`);
      return query.apply(this, args);
    } as typeof pg.Client.prototype.query;
    originals.push(() => (pg.Client.prototype.query = query as typeof pg.Client.prototype.query));
    traceMethod('apply');
    traceMethod('onApplied');
    // The push to the worker, in the same trace: nothing may be read between commit and push.
    const proto = ControlService.prototype as unknown as Record<string, (...args: unknown[]) => unknown>;
    const push = proto.push!;
    proto.push = function (this: unknown, ...args: unknown[]) {
      if (probe.getStore()) trace.push(`${probe.getStore()}: PUSH`);
      return push.apply(this, args);
    };
    originals.push(() => (proto.push = push));

    hub = await startTestHub({ env: { RATE_LIMIT_REST_BURST: '5000', RATE_LIMIT_REST_PER_SEC: '5000' } });
    operator = await hub.token('operator');
    viewer = await Viewer.connect(hub.url, await hub.token('observer'));
    worker = await ScriptedWorker.connect(hub.url, await hub.workerToken(`rt-${randomBytes(3).toString('hex')}`));
    await worker.hello([], 2);
  });
  afterAll(async () => {
    for (const restore of originals.reverse()) restore();
    worker?.close();
    viewer?.close();
    await hub?.stop();
  });

  it('a pause is ≤ 4 round trips (BEGIN, locked read, change + audit, COMMIT), pushed right after COMMIT; control:applied ≤ 4', async () => {
    const created = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'sleep 600' } });
    const runId = created.body.id as string;
    const deadline = Date.now() + 10_000;
    while (!worker.assigned.some((a) => a.runId === runId) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect((await worker.started(runId)).ok).toBe(true);
    await emitAck(viewer.socket, 'run:subscribe', { runId });
    // The worker applies what it is pushed at once and reports it, as the real one does.
    const pushes: number[] = [];
    worker.socket.on('control:apply', (p: { runId: string; seq: number; state: string }, ack: (a: unknown) => void) => {
      pushes.push(p.seq);
      ack({ ok: true, data: {} });
      worker.socket.emit('control:applied', { runId: p.runId, seq: p.seq, effective: p.state === 'paused' ? 'paused-hard' : 'agent', appliedAt: Date.now() }, () => {});
    });
    const applied = (seq: number) => viewer.until(`seq ${seq} applied`, () => { const r = viewer.runs.get(runId); return r && r.control.appliedSeq >= seq ? r : undefined; });

    // Warm-up (token cache, prepared connections), then one measured pause and resume.
    expect((await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/control`, { action: 'pause', mode: 'hard' })).status).toBe(200);
    await applied(1);
    expect((await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/control`, { action: 'resume' })).status).toBe(200);
    await applied(2);

    for (const [seq, body] of [[3, { action: 'pause', mode: 'hard' }], [4, { action: 'resume' }]] as const) {
      trace.length = 0;
      const res = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/control`, body);
      expect(res.status).toBe(200);
      const seen = await applied(seq);
      const applyTrace = trace.filter((t) => t.startsWith('apply:'));
      const appliedTrace = trace.filter((t) => t.startsWith('onApplied:'));
      console.log(`control ${body.action}: ${applyTrace.length - 1} round trips + push; control:applied: ${appliedTrace.length} round trips\n  ${trace.join('\n  ')}`);
      // The REST answer is the row the transaction wrote: the database's own revision, no re-read.
      const [db] = await em(hub.orm).execute<{ revision: number; control_seq: number; control_state: string }[]>('select revision, control_seq, control_state from runs where id = ?', [runId]);
      expect(res.body.control).toMatchObject({ seq, state: body.action === 'pause' ? 'paused' : 'agent' });
      expect(db!.control_seq).toBe(seq);
      expect(res.body.revision).toBeLessThanOrEqual(db!.revision);
      expect(seen.revision).toBe(db!.revision);
      expect(seen.sessions.length).toBe(res.body.sessions.length);

      const statements = applyTrace.filter((t) => t !== 'apply: PUSH');
      expect(statements.length).toBeLessThanOrEqual(4);
      // Pushed right after COMMIT: nothing is read again before the worker hears of it.
      expect(applyTrace.at(-1)).toBe('apply: PUSH');
      expect(applyTrace.at(-2)).toMatch(/^apply: commit/i);
      expect(appliedTrace.length).toBeLessThanOrEqual(4);
      expect(appliedTrace.at(-1)).toMatch(/^onApplied: commit/i);
    }
    expect(pushes).toEqual([1, 2, 3, 4]);
    // Every change and every applied report is in one intact chain.
    const actions = await em(hub.orm).execute<{ action: string }[]>(`select action from audit_events where run_id = ? and action like 'control.%' order by seq`, [runId]);
    expect(actions.map((a) => a.action)).toEqual(['control.pause', 'control.applied', 'control.resume', 'control.applied', 'control.pause', 'control.applied', 'control.resume', 'control.applied']);
    expect((await verifyAudit(em(hub.orm), runId)).ok).toBe(true);
    await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });
});
