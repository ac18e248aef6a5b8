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
 * Before issue 10: 12 for the REST pause (a pre-read, the locked-less read, the update, three audit statements, a second UPDATE from the flush, three re-reads after the push), 10 for `control:applied`.
 * Then 4 and 4 (BEGIN, locked read, change + audit, COMMIT). Then a pause or resume was 2 (a read,
 * the change + audit conditional on the seq read). Now it is 1 on a run this node saw last (the
 * change + audit + the view read back, conditional on the run being as seen) and 2 otherwise;
 * the report of the current change is 1.
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
    await worker.hello([], 4);
  });
  afterAll(async () => {
    for (const restore of originals.reverse()) restore();
    worker?.close();
    viewer?.close();
    await hub?.stop();
  });

  /** A running run on the scripted worker, watched by the viewer. */
  const startRun = async () => {
    const created = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'sleep 600' } });
    const runId = created.body.id as string;
    const deadline = Date.now() + 10_000;
    while (!worker.assigned.some((a) => a.runId === runId) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect((await worker.started(runId)).ok).toBe(true);
    await emitAck(viewer.socket, 'run:subscribe', { runId });
    return runId;
  };

  type Push = { runId: string; seq: number; state: string; changedAt?: number; correlationId?: string };
  /** How the scripted worker answers pushes: what it reports for each (null: nothing). */
  let report: (p: Push) => Record<string, unknown> | null = () => null;
  const pushes: number[] = [];
  beforeAll(() => {
    worker.socket.on('control:apply', (p: Push, ack: (a: unknown) => void) => {
      pushes.push(p.seq);
      ack({ ok: true, data: {} });
      const payload = report(p);
      if (payload) worker.socket.emit('control:applied', payload, () => {});
    });
  });
  /** The report the real worker sends: the push's `changedAt` and `correlationId` echoed. */
  const echoing = (p: Push) => ({ runId: p.runId, seq: p.seq, effective: p.state === 'paused' ? 'paused-hard' : 'agent', appliedAt: Date.now(), changedAt: p.changedAt, correlationId: p.correlationId });

  it('a pause is 1 round trip on a run this node saw last (2 the first time: read, change + audit), pushed right after the write; control:applied of the current change is 1', async () => {
    const runId = await startRun();
    // The worker applies what it is pushed at once and reports it, as the real one does.
    report = echoing;
    pushes.length = 0;
    const applied = (seq: number) => viewer.until(`seq ${seq} applied`, () => { const r = viewer.runs.get(runId); return r && r.control.appliedSeq >= seq ? r : undefined; });

    // Warm-up (token cache, prepared connections), then one measured pause and resume. The
    // first command on the run reads it: this node has not seen it yet.
    trace.length = 0;
    expect((await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/control`, { action: 'pause', mode: 'hard' })).status).toBe(200);
    expect(trace.filter((t) => t.startsWith('apply:') && t !== 'apply: PUSH')).toEqual(['apply: select r.*, run_view_extras(r.id,', 'apply: with c as']);
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
      expect(statements).toEqual(['apply: with c as']);
      // Pushed right after the write: nothing is read again before the worker hears of it.
      expect(applyTrace.at(-1)).toBe('apply: PUSH');
      expect(appliedTrace).toEqual(['onApplied: with c as']);
    }
    expect(pushes).toEqual([1, 2, 3, 4]);
    // Every change and every applied report is in one intact chain.
    const actions = await em(hub.orm).execute<{ action: string }[]>(`select action from audit_events where run_id = ? and action like 'control.%' order by seq`, [runId]);
    expect(actions.map((a) => a.action)).toEqual(['control.pause', 'control.applied', 'control.resume', 'control.applied', 'control.pause', 'control.applied', 'control.resume', 'control.applied']);
    expect((await verifyAudit(em(hub.orm), runId)).ok).toBe(true);
    // The one-statement report writes the row the locked path would: the change's correlation, the delay from its push.
    const rows = await em(hub.orm).execute<{ action: string; correlation_id: string; metadata: { seq: number; delayMs: number | null; advanced: boolean; effective: string } }[]>(
      `select action, correlation_id, metadata from audit_events where run_id = ? and action like 'control.%' order by seq`, [runId]);
    for (let i = 0; i < rows.length; i += 2) {
      const [change, applied] = [rows[i]!, rows[i + 1]!];
      expect(applied.correlation_id).toBe(change.correlation_id);
      expect(applied.metadata).toMatchObject({ seq: i / 2 + 1, advanced: true, effective: i % 4 === 0 ? 'paused-hard' : 'agent' });
      expect(applied.metadata.delayMs).toEqual(expect.any(Number));
    }

    // A takeover and its hand-back (each in a transaction) leave this node knowing the run as
    // they wrote it: the next pause is one statement again.
    report = () => null;
    for (const body of [{ action: 'takeover', mode: 'hard' }, { action: 'handback', summary: 'done' }]) {
      expect((await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/control`, body)).status, body.action).toBe(200);
    }
    trace.length = 0;
    const paused = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/control`, { action: 'pause', mode: 'hard' });
    expect(paused.body.control).toMatchObject({ seq: 7, state: 'paused' });
    expect(trace.filter((t) => t.startsWith('apply:') && t !== 'apply: PUSH')).toEqual(['apply: with c as']);
    await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('a run changed on another node since this one saw it: the one statement changes nothing, the command reads and decides on the truth; an ended run is refused', async () => {
    const runId = await startRun();
    report = echoing;
    const other = await startTestHub({ databaseUrl: hub.db!.url });
    try {
      const otherOperator = await other.token('operator');
      const command = async (url: string, token: string, body: Record<string, unknown>) => {
        trace.length = 0;
        const res = await api(url, token, 'POST', `/api/task-runs/${runId}/control`, body);
        return { res, statements: trace.filter((t) => t.startsWith('apply:') && t !== 'apply: PUSH') };
      };
      const read = 'apply: select r.*, run_view_extras(r.id,';
      const write = 'apply: with c as';

      // This node pauses and resumes (seq 1, 2): it has seen the run.
      expect((await command(hub.url, operator, { action: 'pause', mode: 'hard' })).res.status).toBe(200);
      expect((await command(hub.url, operator, { action: 'resume' })).statements).toEqual([write]);
      // The other node pauses and resumes it (seq 3, 4): this node's view is two changes old.
      expect((await command(other.url, otherOperator, { action: 'pause', mode: 'hard' })).statements).toEqual([read, write]);
      expect((await command(other.url, otherOperator, { action: 'resume' })).statements).toEqual([write]);

      // A pause decided on seq 2 `agent`: the conditional statement finds seq 4 and writes nothing;
      // the command reads the run and writes seq 5 from what it read.
      const raced = await command(hub.url, operator, { action: 'pause', mode: 'hard' });
      expect(raced.res.status).toBe(200);
      expect(raced.res.body.control).toMatchObject({ seq: 5, state: 'paused' });
      expect(raced.statements).toEqual([write, read, write]);
      // The other node's view (seq 4 `agent`) cannot take a resume: decided on the truth (seq 5 `paused`), it can.
      const resumed = await command(other.url, otherOperator, { action: 'resume' });
      expect(resumed.res.status).toBe(200);
      expect(resumed.res.body.control).toMatchObject({ seq: 6, state: 'agent' });
      expect(resumed.statements).toEqual([read, write]);

      // Every change is in the chain once, each `from` what the one before it left.
      const rows = await em(hub.orm).execute<{ action: string; metadata: { seq: number; from: string; to: string } }[]>(
        `select action, metadata from audit_events where run_id = ? and action in ('control.pause', 'control.resume') order by seq`, [runId]);
      expect(rows.map((r) => [r.action, r.metadata.seq, r.metadata.from, r.metadata.to])).toEqual([
        ['control.pause', 1, 'agent', 'paused'], ['control.resume', 2, 'paused', 'agent'],
        ['control.pause', 3, 'agent', 'paused'], ['control.resume', 4, 'paused', 'agent'],
        ['control.pause', 5, 'agent', 'paused'], ['control.resume', 6, 'paused', 'agent'],
      ]);
      expect((await verifyAudit(em(hub.orm), runId)).ok).toBe(true);

      // Cancelled on the other node: this node's view (seq 5 `paused`, running) can take a resume;
      // the statement changes nothing and the command is refused as before, from the row it reads.
      expect((await api(other.url, otherOperator, 'POST', `/api/task-runs/${runId}/cancel`, {})).status).toBe(200);
      const [before] = await em(hub.orm).execute<Record<string, unknown>[]>('select * from runs where id = ?', [runId]);
      const ended = await command(hub.url, operator, { action: 'resume' });
      expect(ended.res.status).toBe(409);
      expect(ended.res.body.error.message).toMatch(/is cancelled: it cannot be resumed/);
      expect(ended.statements).toEqual([write, read]);
      const [after] = await em(hub.orm).execute<Record<string, unknown>[]>('select * from runs where id = ?', [runId]);
      expect(after).toEqual(before);
    } finally {
      await other.close();
    }
  });

  it('a report that does not echo the push (an older worker), or echoes it wrong, is decided under the lock: the row names the change the database holds', async () => {
    const runId = await startRun();
    const applied = (seq: number) => viewer.until(`seq ${seq} applied`, () => { const r = viewer.runs.get(runId); return r && r.control.appliedSeq >= seq ? r : undefined; });
    const forged = '01890000-0000-7000-8000-000000000000';
    const cases: Array<[string, (p: Push) => Record<string, unknown>]> = [
      ['no echo', (p) => ({ runId: p.runId, seq: p.seq, effective: p.state === 'paused' ? 'paused-hard' : 'agent', appliedAt: Date.now() })],
      ['a foreign correlation id', (p) => ({ ...echoing(p), correlationId: forged })],
      ['another change time', (p) => ({ ...echoing(p), changedAt: (p.changedAt ?? 0) - 1 })],
    ];
    let seq = 0;
    for (const [what, reply] of cases) {
      report = reply;
      trace.length = 0;
      const body = seq % 2 === 0 ? { action: 'pause', mode: 'hard' } : { action: 'resume' };
      const res = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/control`, body);
      expect(res.status, what).toBe(200);
      seq += 1;
      await applied(seq);
      const appliedTrace = trace.filter((t) => t.startsWith('onApplied:'));
      // The locked path: BEGIN, locked read, advance + audit, COMMIT — after the one statement
      // found nothing to change when the report named a change (a report without one skips it).
      const locked = what === 'no echo' ? appliedTrace : appliedTrace.slice(1);
      if (what !== 'no echo') expect(appliedTrace[0], what).toBe('onApplied: with c as');
      expect(locked, what).toHaveLength(4);
      expect(locked[0], what).toMatch(/^onApplied: begin/i);
      expect(locked.at(-1), what).toMatch(/^onApplied: commit/i);
    }
    const rows = await em(hub.orm).execute<{ action: string; correlation_id: string; metadata: { seq: number } }[]>(
      `select action, correlation_id, metadata from audit_events where run_id = ? and action like 'control.%' order by seq`, [runId]);
    expect(rows.map((r) => r.action)).toEqual(['control.pause', 'control.applied', 'control.resume', 'control.applied', 'control.pause', 'control.applied']);
    for (let i = 0; i < rows.length; i += 2) expect(rows[i + 1]!.correlation_id).toBe(rows[i]!.correlation_id);
    expect(rows.some((r) => r.correlation_id === forged)).toBe(false);
    expect((await verifyAudit(em(hub.orm), runId)).ok).toBe(true);
    await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('concurrent pauses and resumes without a lock: each seq is written once, losers read again, the chain stays whole', async () => {
    const runId = await startRun();
    report = echoing;
    const n = 12;
    let applied = 0;
    let raced = false;
    // Until a round shows the race (HTTP may deliver a round one by one): at most 10 rounds.
    for (let round = 0; round < 10 && !raced; round++) {
      trace.length = 0;
      const before = applied;
      const answers = await Promise.all(Array.from({ length: n }, (_, i) =>
        api(hub.url, operator, 'POST', `/api/task-runs/${runId}/control`, i % 2 === 0 ? { action: 'pause', mode: 'hard' } : { action: 'resume' })));
      const writes = trace.filter((t) => t === 'apply: with c as').length;
      const ok = answers.filter((a) => a.status === 200);
      console.log(`round ${round}: ${n} concurrent commands, ${ok.length} applied, ${writes} conditional writes`);
      // The race happened when more conditional writes were sent than changes were made.
      raced = writes > ok.length;
      // The others were refused as the lock would have had them: a pause while paused, a resume while running (or, after three lost races, `changed meanwhile`).
      for (const a of answers) if (a.status !== 200) expect(a.body.error.code).toBe('STATE_CONFLICT');
      // Each seq was written once: the answers' seqs are the next ones, without a gap or a repeat.
      const seqs = ok.map((a) => a.body.control.seq as number).sort((a, b) => a - b);
      applied += ok.length;
      expect(seqs).toEqual(Array.from({ length: ok.length }, (_, i) => before + i + 1));
      const [db] = await em(hub.orm).execute<{ control_seq: number }[]>('select control_seq from runs where id = ?', [runId]);
      expect(db!.control_seq).toBe(applied);
    }
    expect(raced).toBe(true);
    const changes = await em(hub.orm).execute<{ n: number }[]>(`select count(*)::int as n from audit_events where run_id = ? and action in ('control.pause', 'control.resume')`, [runId]);
    expect(changes[0]!.n).toBe(applied);
    expect((await verifyAudit(em(hub.orm), runId)).ok).toBe(true);
    await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });
});
