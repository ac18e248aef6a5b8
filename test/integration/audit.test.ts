import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

describe('audit log: read, export, verify; recording export', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let admin: string;
  let operator: string;
  let runId: string;

  beforeAll(async () => {
    hub = await startTestHub();
    admin = await hub.token('admin');
    operator = await hub.token('operator');
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken('audit-worker') });
    const viewer = await Viewer.connect(hub.url, admin);
    // The title carries a secret-looking value: it must be redacted in the audit row.
    const res = await api(hub.url, operator, 'POST', '/api/task-runs', {
      command: { script: 'printf "one\\n"; sleep 0.2; printf "two\\n"' },
      title: 'deploy with ghp_abcdefghijklmnopqrstuvwxyz0123456789',
    });
    runId = res.body.id;
    await viewer.untilStatus(runId, ['succeeded']);
    viewer.close();
  });
  afterAll(async () => {
    await worker?.stop();
    await hub?.stop();
  });

  it('lists the chain in order with cursors, filters by action, and redacts secrets in metadata', async () => {
    const all = await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events`);
    expect(all.status).toBe(200);
    const actions = all.body.events.map((e: { action: string }) => e.action);
    expect(actions[0]).toBe('run.create');
    expect(actions).toContain('run.exit');
    expect(all.body.events.map((e: { seq: number }) => e.seq)).toEqual(actions.map((_: string, i: number) => i + 1));
    expect(JSON.stringify(all.body)).not.toContain('ghp_abcdefghijklmnopqrstuvwxyz0123456789');
    expect(all.body.events[0].metadata.title).toContain('[REDACTED:github]');

    const page1 = await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events?limit=2`);
    const page2 = await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events?limit=2&cursor=${page1.body.nextCursor}`);
    expect(page2.body.events[0].seq).toBe(3);
    const exits = await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events?action=run.exit`);
    expect(exits.body.events).toHaveLength(1);

    const jsonl = await fetch(`${hub.url}/api/task-runs/${runId}/events?format=jsonl`, { headers: { authorization: `Bearer ${admin}` } });
    const lines = (await jsonl.text()).trim().split('\n').map((l) => JSON.parse(l));
    // The export ends with the signed head covering exactly the rows above it (docs/audit.md).
    const { head } = lines.pop();
    expect(head).toMatchObject({ runId, seq: lines.length, hash: lines.at(-1).hash });
    expect(lines.map((l) => l.action)).toEqual(actions);
    expect(all.body.head).toMatchObject({ runId, seq: actions.length, hash: all.body.events.at(-1).hash });

    expect((await api(hub.url, operator, 'GET', `/api/task-runs/${runId}/events`)).status).toBe(403);
    expect((await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events?limit=5000`)).body.error.code).toBe('VALIDATION');
  });

  it('verifies the chain, and names the first row tampered with directly in SQL', async () => {
    const ok = await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events/verify`);
    expect(ok.body).toMatchObject({ ok: true });
    expect(ok.body.rows).toBeGreaterThan(4);

    // The application can't edit audit rows (a trigger refuses); a superuser can disable it.
    const client = new pg.Client({ connectionString: hub.db!.url });
    await client.connect();
    try {
      await client.query('alter table control_events disable trigger control_events_no_update');
      await client.query(`update control_events set metadata = '{"forged":true}' where run_id = $1 and seq = 3`, [runId]);
      await client.query('alter table control_events enable trigger control_events_no_update');
    } finally {
      await client.end();
    }
    const bad = await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events/verify`);
    expect(bad.body).toMatchObject({ ok: false, brokenAt: { seq: 3, reason: 'hash does not match the row' } });
  });

  it('keeps one valid chain under 50 concurrent commands on one run', async () => {
    const viewer = await Viewer.connect(hub.url, admin);
    const res = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'sleep 30' } });
    const id = res.body.id as string;
    await viewer.untilStatus(id, ['running']);
    // 50 commands at once, each writing an audit row on the same run's chain.
    const results = await Promise.all(Array.from({ length: 50 }, () => api(hub.url, operator, 'POST', `/api/task-runs/${id}/live-session`, { provider: 'web' })));
    expect(results.every((r) => r.status === 200 || r.status === 201)).toBe(true);
    const verify = await api(hub.url, admin, 'GET', `/api/task-runs/${id}/events/verify`);
    expect(verify.body).toMatchObject({ ok: true });
    const rows = (await api(hub.url, admin, 'GET', `/api/task-runs/${id}/events?limit=1000`)).body.events as { action: string; seq: number }[];
    expect(rows.filter((e) => e.action === 'session.reuse' || e.action === 'session.create').length).toBeGreaterThanOrEqual(50);
    expect(rows.map((e) => e.seq)).toEqual(rows.map((_, i) => i + 1));
    await api(hub.url, operator, 'POST', `/api/task-runs/${id}/cancel`, {});
    viewer.close();
  });

  it('exports the recording as asciicast v2', async () => {
    const res = await fetch(`${hub.url}/api/task-runs/${runId}/recording.cast`, { headers: { authorization: `Bearer ${operator}` } });
    expect(res.status).toBe(200);
    const [header, ...events] = (await res.text()).trim().split('\n').map((l) => JSON.parse(l));
    expect(header).toMatchObject({ version: 2, width: 120, height: 32 });
    expect(events.every((e: unknown[]) => e[1] === 'o' && typeof e[0] === 'number')).toBe(true);
    const times = events.map((e: unknown[]) => e[0] as number);
    expect([...times].sort((a, b) => a - b)).toEqual(times);
    expect(events.map((e: unknown[]) => e[2]).join('').replace(/\r\n/g, '\n')).toBe('one\ntwo\n');
  });
});
