import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditEventSchema } from '../../server/src/infra/db/entities.js';
import { em } from '../../server/src/infra/db/orm.js';
import { chainHash } from '../../server/src/domain/hash-chain.js';
import { api } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';

// The same suite against both drivers: real PostgreSQL and embedded PGlite.
describe.each(['postgres', 'pglite'] as const)('persistence on %s', (driver) => {
  let hub: TestHub;
  let operator: string;

  beforeAll(async () => {
    hub = await startTestHub({ driver });
    operator = await hub.token('operator');
  });
  afterAll(async () => {
    await hub?.stop();
  });

  it('ran the migration: every table of the domain model exists', async () => {
    const rows = await em(hub.orm).execute<{ table_name: string }[]>(
      `select table_name from information_schema.tables where table_schema = current_schema() order by table_name`,
    );
    const tables = rows.map((r) => r.table_name);
    for (const t of ['users', 'api_tokens', 'workers', 'runs', 'live_sessions', 'write_grants', 'audit_events', 'operator_messages', 'approvals', 'recording_chunks', 'schema_migrations']) {
      expect(tables).toContain(t);
    }
  });

  it('stores only token hashes and authenticates by them', async () => {
    const rows = await em(hub.orm).execute<{ token_hash: string }[]>('select token_hash from api_tokens');
    expect(rows.length).toBeGreaterThan(0);
    expect(rows.some((r) => r.token_hash.includes(operator))).toBe(false);
    const who = await api(hub.url, operator, 'GET', '/api/auth/whoami');
    expect(who.status).toBe(200);
    expect(who.body.role).toBe('operator');
  });

  it('creates, lists with a cursor, shows and cancels runs', async () => {
    const created: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { argv: ['echo', String(i)] }, title: `run ${i}`, labels: { batch: driver } });
      expect(res.status).toBe(201);
      expect(res.body.status).toBe('queued');
      created.push(res.body.id);
    }
    const page1 = await api(hub.url, operator, 'GET', '/api/task-runs?limit=2');
    expect(page1.body.runs.map((r: { id: string }) => r.id)).toEqual([created[4], created[3]]);
    const page2 = await api(hub.url, operator, 'GET', `/api/task-runs?limit=2&cursor=${page1.body.nextCursor}`);
    expect(page2.body.runs.map((r: { id: string }) => r.id)).toEqual([created[2], created[1]]);

    const shown = await api(hub.url, operator, 'GET', `/api/task-runs/${created[0]}`);
    expect(shown.body).toMatchObject({ id: created[0], title: 'run 0', labels: { batch: driver }, command: { argv: ['echo', '0'] } });

    const cancelled = await api(hub.url, operator, 'POST', `/api/task-runs/${created[0]}/cancel`, {});
    expect(cancelled.status).toBe(200);
    expect(cancelled.body.status).toBe('cancelled');
    const again = await api(hub.url, operator, 'POST', `/api/task-runs/${created[0]}/cancel`, {});
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('STATE_CONFLICT');
  });

  it('writes a valid hash chain of audit rows per run, and the database refuses edits', async () => {
    const run = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'true' } });
    await api(hub.url, operator, 'POST', `/api/task-runs/${run.body.id}/cancel`, {});
    const rows = await em(hub.orm).find(AuditEventSchema, { runId: run.body.id }, { orderBy: { seq: 'asc' } });
    expect(rows.map((r) => r.action)).toEqual(['run.create', 'run.cancel']);
    let prev: string | null = null;
    for (const r of rows) {
      expect(r.prevHash).toBe(prev);
      const { hash, prevHash: _p, at, ...fields } = r;
      expect(hash).toBe(chainHash(prev, { ...fields, at: at.toISOString() } as Parameters<typeof chainHash>[1]));
      prev = hash;
    }
    await expect(em(hub.orm).execute(`update audit_events set action = 'x' where run_id = ?`, [run.body.id])).rejects.toThrow(/append-only/);
    await expect(em(hub.orm).execute(`delete from audit_events where run_id = ?`, [run.body.id])).rejects.toThrow(/append-only/);
    await expect(em(hub.orm).execute(`truncate audit_events`)).rejects.toThrow(/append-only/);
    const [{ n }] = (await em(hub.orm).execute<{ n: number }[]>('select count(*)::int as n from audit_events where run_id = ?', [run.body.id])) as [{ n: number }];
    expect(n).toBe(rows.length);
  });

  it('records terminal frames once each and serves them back in order', async () => {
    const run = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'true' } });
    const id = run.body.id as string;
    const frames = Array.from({ length: 30 }, (_, i) => ({ seq: i + 1, t: i * 10, data: `line ${i + 1}\r\n` }));
    // Output is recorded only while the run is its feeding worker's and active.
    const { worker } = await hub.auth.issueWorkerToken(`persist-${driver}`);
    const feeder = { workerId: worker.id, socketId: 'test-socket' };
    await expect(hub.terminal.ingest(id, feeder, frames.slice(0, 5))).rejects.toMatchObject({ code: 'FORBIDDEN' });
    await em(hub.orm).execute(`update runs set status = 'running', worker_id = ? where id = ?`, [worker.id, id]);
    expect(await hub.terminal.ingest(id, feeder, frames.slice(0, 20))).toBe(20);
    // A resend overlapping what was stored (e.g. after a reconnect) is deduplicated.
    expect(await hub.terminal.ingest(id, feeder, frames.slice(10))).toBe(30);
    const all = await hub.terminal.scrollback(id);
    expect(all.frames.map((f) => f.seq)).toEqual(frames.map((f) => f.seq));
    expect(all.frames.map((f) => f.data).join('')).toBe(frames.map((f) => f.data).join(''));
    const after = await hub.terminal.scrollback(id, 25);
    expect(after.frames.map((f) => f.seq)).toEqual([26, 27, 28, 29, 30]);
    const [{ n }] = (await em(hub.orm).execute<{ n: number }[]>('select count(*)::int as n from recording_chunks where run_id = ?', [id])) as [{ n: number }];
    expect(n).toBe(30);
  });

  it('records every frame byte for byte: multi-byte characters, emoji, escapes, quotes, commas and text that looks like SQL, JSON or hex', async () => {
    const run = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'true' } });
    const id = run.body.id as string;
    const { worker } = await hub.auth.issueWorkerToken(`persist-bytes-${driver}`);
    await em(hub.orm).execute(`update runs set status = 'running', worker_id = ? where id = ?`, [worker.id, id]);
    const texts = [
      'ä€𝄞 日本語 😀👩‍👩‍👧', // 2-, 3- and 4-byte UTF-8, surrogate pairs, joiners
      `"'\\" \\x00 \\u0000 \\n`, // quotes and backslashes, escape sequences as text (no NUL)
      '{"seq":1,"t":2,"data":"x"}, {1,2,3}', // JSON and array literals, commas
      "'); drop table recording_chunks; --",
      '\u001b[31mred\u001b[0m\r\n\u2028\u2029\ufeff',
      'é'.repeat(20_000), // a long frame of 2-byte characters: every byte offset after it shifts
      '\\x6869', // bytea's own hex syntax, as text
    ];
    const frames = texts.map((data, i) => ({ seq: i + 1, t: i * 7, data }));
    const feeder = { workerId: worker.id, socketId: 'test-socket-bytes' };
    expect(await hub.terminal.ingest(id, feeder, frames)).toBe(frames.length);
    const rows = await em(hub.orm).execute<{ seq: number; t: number; data: string }[]>('select seq, t, data from recording_chunks where run_id = ? order by seq', [id]);
    expect(rows.map((r) => ({ seq: r.seq, t: r.t, data: r.data }))).toEqual(frames);
  });
});
