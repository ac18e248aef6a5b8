import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { em } from '../../server/src/infra/db/orm.js';
import { api, eventually, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { lineNumbers, numberedFrames, recordedText, ScriptedWorker } from '../support/scripted-worker.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

// Faults are injected into this test's own database with triggers on recording_chunks.
describe('chaos: recording durability under slow and failing inserts', () => {
  let hub: TestHub;
  let admin: string;
  let viewer: Viewer;
  let worker: WorkerProcess | null = null;

  const sql = (text: string, params: unknown[] = []) => em(hub.orm).execute(text, params);
  const recordedSeqs = async (runId: string) =>
    (await sql('select seq from recording_chunks where run_id = ? order by seq', [runId])).map((r) => Number((r as { seq: number }).seq));

  beforeAll(async () => {
    hub = await startTestHub({ env: { HEARTBEAT_INTERVAL: '300ms' } });
    admin = await hub.token('admin');
    viewer = await Viewer.connect(hub.url, admin);
  });
  afterEach(async () => {
    await worker?.stop();
    worker = null;
    await sql('drop trigger if exists slow_recording on recording_chunks');
    await sql('drop trigger if exists failing_recording on recording_chunks');
  });
  afterAll(async () => {
    viewer?.close();
    await hub?.stop();
  });

  it('slow inserts (300 ms each) while a run prints 300 numbered lines fast: every line exactly once, in order', async () => {
    await sql(`create table if not exists test_insert_count (n int not null)`);
    await sql(`delete from test_insert_count`);
    await sql(`insert into test_insert_count values (0)`);
    await sql(`create or replace function test_slow_recording() returns trigger language plpgsql as $$
      begin update test_insert_count set n = n + 1; perform pg_sleep(0.3); return null; end $$`);
    await sql(`create trigger slow_recording before insert on recording_chunks for each statement execute function test_slow_recording()`);
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`slow-${randomBytes(3).toString('hex')}`) });
    const n = 300;
    const started = Date.now();
    const runId = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: `i=1; while [ $i -le ${n} ]; do echo "line $i"; i=$((i+1)); sleep 0.01; done` } })).body.id as string;
    const done = await viewer.untilStatus(runId, ['succeeded', 'failed'], 60_000);
    expect(done.status).toBe('succeeded');
    expect(lineNumbers(await recordedText(hub.url, admin, runId))).toEqual(range(1, n));
    const seqs = await recordedSeqs(runId);
    expect(seqs).toEqual(range(1, seqs.length));
    // The race happened: frames kept arriving while inserts were in flight, so inserts carried several frames each.
    const { n: inserts } = (await sql(`select n from test_insert_count`))[0] as { n: number };
    expect(inserts).toBeGreaterThanOrEqual(3);
    expect(seqs.length).toBeGreaterThan(2 * inserts);
    console.log(`slow inserts: ${n} lines in ${seqs.length} frames, recorded gapless by ${inserts} inserts of 300 ms, run took ${Date.now() - started} ms`);
  });

  it('a stream holds at most 4 MiB unrecorded: past it frames are neither accepted nor broadcast, and are taken on resend', async () => {
    await sql(`create or replace function test_slow_recording() returns trigger language plpgsql as $$ begin perform pg_sleep(0.3); return null; end $$`);
    await sql(`create trigger slow_recording before insert on recording_chunks for each statement execute function test_slow_recording()`);
    const { worker: w } = await hub.auth.issueWorkerToken(`bound-${randomBytes(3).toString('hex')}`);
    const runId = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'scripted' } })).body.id as string;
    await sql(`update runs set status = 'running', worker_id = ? where id = ?`, [w.id, runId]);
    expect(await viewer.socket.timeout(5000).emitWithAck('term:subscribe', { runId })).toMatchObject({ ok: true });
    const big = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => ({ seq: from + i, t: 0, data: `${from + i}:`.padEnd(256 * 1024, 'x') }));
    const feeder = { workerId: w.id, socketId: 'bound-test' };
    // 20 frames of 256 KiB = 5 MiB: only the first 4 MiB (16 frames) fit while the inserts are slow.
    const first = hub.terminal.ingest(runId, feeder, big(1, 20));
    await viewer.until('first frames live', () => (viewer.live.get(runId)?.length ?? 0) >= 16);
    expect(Math.max(...viewer.live.get(runId)!.map((f) => f.seq))).toBe(16);
    expect(hub.terminal.pendingFrames(runId).length).toBeLessThanOrEqual(16);
    expect(await first).toBe(16);
    // The worker resends what was not acked: now it fits.
    expect(await hub.terminal.ingest(runId, feeder, big(17, 20))).toBe(20);
    expect(await recordedSeqs(runId)).toEqual(range(1, 20));
    expect(viewer.live.get(runId)!.map((f) => f.seq)).toEqual(range(1, 20));
    await hub.terminal.close(runId);
  });

  it('failing inserts for a while, then recovery: no frame is acked before it is recorded; the recording is complete after', async () => {
    await sql(`create table if not exists test_recording_fault (failing boolean not null)`);
    await sql(`delete from test_recording_fault`);
    await sql(`insert into test_recording_fault values (false)`);
    await sql(`create or replace function test_failing_recording() returns trigger language plpgsql as $$
      begin
        if (select failing from test_recording_fault limit 1) then raise exception 'recording storage unavailable (test fault)'; end if;
        return null;
      end $$`);
    await sql(`create trigger failing_recording before insert on recording_chunks for each statement execute function test_failing_recording()`);

    const w = await ScriptedWorker.connect(hub.url, await hub.workerToken(`fail-${randomBytes(3).toString('hex')}`));
    try {
      await w.hello();
      const runId = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'scripted' }, liveSession: false })).body.id as string;
      await eventually('assigned', async () => w.assigned.some((a) => a.runId === runId));
      expect((await w.started(runId)).ok).toBe(true);
      const ackOf = async (from: number, to: number) => {
        const ack = await w.output(runId, numberedFrames(from, to));
        if (!ack.ok) throw new Error(ack.error.message);
        // An ack never runs ahead of the database.
        const recorded = await recordedSeqs(runId);
        expect(ack.data.lastSeq).toBeLessThanOrEqual(recorded.length ? recorded[recorded.length - 1]! : 0);
        return ack.data.lastSeq;
      };
      expect(await ackOf(1, 10)).toBe(10);

      await sql(`update test_recording_fault set failing = true`);
      // While the database refuses writes, nothing new is acked: the worker keeps the frames.
      expect(await ackOf(11, 20)).toBe(10);
      expect(await ackOf(21, 30)).toBe(10);
      expect(await ackOf(11, 30)).toBe(10); // a resend changes nothing
      expect(await recordedSeqs(runId)).toEqual(range(1, 10));

      await sql(`update test_recording_fault set failing = false`);
      // The worker resends from the last ack; the hub (which kept them) records them once.
      let acked = 10;
      await eventually('frames 11..30 acked after recovery', async () => (acked = await ackOf(acked + 1, 30)) === 30, 10_000);
      expect(await ackOf(31, 40)).toBe(40);
      expect((await w.exited(runId, 0)).ok).toBe(true);
      expect(await recordedSeqs(runId)).toEqual(range(1, 40));
      expect(lineNumbers(await recordedText(hub.url, admin, runId))).toEqual(range(1, 40));
      // One error per outage, not one per retry.
      const failures = hub.logs().split('\n').filter((l) => l.includes('recording write failed') && l.includes(runId));
      expect(failures).toHaveLength(1);
      expect(hub.logs().split('\n').some((l) => l.includes('recording writes resumed') && l.includes(runId))).toBe(true);
    } finally {
      w.close();
    }
  });
});
