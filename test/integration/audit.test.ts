import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Frame } from '@handoff/shared';
import { api, emitAck, eventually, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

describe('audit log: read, export, verify; recording export', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let admin: string;
  let operator: string;
  let observer: string;
  let runId: string;

  beforeAll(async () => {
    hub = await startTestHub();
    admin = await hub.token('admin');
    operator = await hub.token('operator');
    observer = await hub.token('observer');
    // Not the default size: the cast header must carry the pane's real one.
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken('audit-worker'), env: { WORKER_COLS: '100', WORKER_ROWS: '30' } });
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

    expect((await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events?limit=5000`)).body.error.code).toBe('VALIDATION');
  });

  it('names the actors and links each row to the recording frame shown at its time', async () => {
    const page = (await api(hub.url, operator, 'GET', `/api/task-runs/${runId}/events`)).body;
    const byAction = (a: string) => page.events.find((e: { action: string }) => e.action === a);
    const creator = byAction('run.create');
    expect(page.actors[creator.actorId]).toMatch(/^operator-\d+-/);
    expect(page.actors[byAction('run.exit').actorId]).toBe('audit-worker');
    expect(page.actors.hub).toBe('hub');
    // Rows before the first frame have none; the exit comes after every frame of the run.
    expect(page.frames[String(creator.seq)]).toBeUndefined();
    const cast = await fetch(`${hub.url}/api/task-runs/${runId}/recording.cast`, { headers: { authorization: `Bearer ${operator}` } });
    const frameCount = (await cast.text()).trim().split('\n').length - 1;
    expect(page.frames[String(byAction('run.exit').seq)]).toBe(frameCount);
    expect(page.observerView).toBe(false);
  });

  it('links a row written mid-run to the frame its author was looking at', async () => {
    // The frames' `t` count from when the worker took the run; the hub dates the start from the
    // same origin (`sinceMs`), not from when the report arrived.
    const viewer = await Viewer.connect(hub.url, admin);
    const id = (await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'printf "first\\n"; sleep 3; printf "second\\n"' } })).body.id as string;
    await viewer.untilStatus(id, ['running']);
    // The first frame may come with the subscription's scrollback (it can be out before the subscribe is in), or live.
    const sub = await emitAck<{ frames: Frame[] }>(viewer.socket, 'term:subscribe', { runId: id });
    const first = sub.ok && sub.data.frames.find((f) => f.data.includes('first')) || await viewer.until('the first frame', () => viewer.live.get(id)?.find((f) => f.data.includes('first')));
    expect((await api(hub.url, operator, 'POST', `/api/task-runs/${id}/operator-messages`, { message: 'seen it' })).status).toBe(201);
    await viewer.untilStatus(id, ['succeeded']);
    viewer.close();
    const page = (await api(hub.url, operator, 'GET', `/api/task-runs/${id}/events`)).body;
    const sent = page.events.find((e: { action: string }) => e.action === 'message.send');
    expect(page.frames[String(sent.seq)]).toBe(first.seq);
  });

  it('lets operators and observers read a takeover; observers without what the operator wrote for the agent', async () => {
    const viewer = await Viewer.connect(hub.url, admin);
    const id = (await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'sleep 30' } })).body.id as string;
    await viewer.untilStatus(id, ['running']);
    expect((await api(hub.url, operator, 'POST', `/api/task-runs/${id}/control`, { action: 'takeover' })).status).toBe(200);
    expect((await api(hub.url, operator, 'POST', `/api/task-runs/${id}/control`, { action: 'handback', summary: 'rotated the cert, carry on' })).status).toBe(200);
    const completed = (token: string) => api(hub.url, token, 'GET', `/api/task-runs/${id}/events`).then((r) => (r.body.events.some((e: { action: string }) => e.action === 'handoff.completed') ? r.body : undefined));
    const asOperator = await eventually('handoff.completed audited', () => completed(operator));
    const asObserver = (await api(hub.url, observer, 'GET', `/api/task-runs/${id}/events`)).body;
    const row = (page: { events: { action: string; metadata: Record<string, unknown> }[] }, action: string) => page.events.find((e) => e.action === action)!;
    expect(row(asOperator, 'control.handback').metadata.summary).toBe('rotated the cert, carry on');
    expect(row(asObserver, 'control.handback').metadata.summary).toBe('[REDACTED:observer]');
    expect(row(asObserver, 'handoff.completed').metadata).toMatchObject({ env: '[REDACTED:observer]', commands: '[REDACTED:observer]' });
    expect(row(asOperator, 'handoff.completed').metadata.env).not.toBe('[REDACTED:observer]');
    expect(asObserver.observerView).toBe(true);
    // Same rows, same chain: only the hidden members differ.
    expect(asObserver.events.map((e: { hash: string }) => e.hash)).toEqual(asOperator.events.slice(0, asObserver.events.length).map((e: { hash: string }) => e.hash));
    expect(JSON.stringify(asObserver)).not.toContain('rotated the cert');
    // The observer's export hides the same; the verification is the hub's, over the full rows.
    const jsonl = await fetch(`${hub.url}/api/task-runs/${id}/events?format=jsonl`, { headers: { authorization: `Bearer ${observer}` } });
    expect(await jsonl.text()).not.toContain('rotated the cert');
    expect((await api(hub.url, observer, 'GET', `/api/task-runs/${id}/events/verify`)).body).toMatchObject({ ok: true });
    await api(hub.url, operator, 'POST', `/api/task-runs/${id}/cancel`, {});
    viewer.close();
  });

  // Before the tampering below: the pane in the cast header is read from the run.start row.
  it('exports the recording as asciicast v2: the pane’s real size, its TERM and shell, UTF-8 said', async () => {
    const res = await fetch(`${hub.url}/api/task-runs/${runId}/recording.cast`, { headers: { authorization: `Bearer ${observer}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/x-asciicast; charset=utf-8');
    const [header, ...events] = (await res.text()).trim().split('\n').map((l) => JSON.parse(l));
    expect(header).toMatchObject({ version: 2, width: 100, height: 30, env: { TERM: 'screen-256color', SHELL: '/bin/sh' } });
    expect(events.every((e: unknown[]) => e[1] === 'o' && typeof e[0] === 'number')).toBe(true);
    const times = events.map((e: unknown[]) => e[0] as number);
    expect([...times].sort((a, b) => a - b)).toEqual(times);
    expect(events.map((e: unknown[]) => e[2]).join('').replace(/\r\n/g, '\n')).toBe('one\ntwo\n');
  });

  it('verifies the chain, and names the first row tampered with directly in SQL', async () => {
    const ok = await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events/verify`);
    expect(ok.body).toMatchObject({ ok: true });
    expect(ok.body.rows).toBeGreaterThan(4);

    // The application can't edit audit rows (a trigger refuses); a superuser can disable it.
    const client = new pg.Client({ connectionString: hub.db!.url });
    await client.connect();
    try {
      await client.query('alter table audit_events disable trigger audit_events_no_update');
      await client.query(`update audit_events set metadata = '{"forged":true}' where run_id = $1 and seq = 3`, [runId]);
      await client.query('alter table audit_events enable trigger audit_events_no_update');
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
});
