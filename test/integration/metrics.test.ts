import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, connect, emitAck, joinFrames, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

const METRICS_TOKEN = `scrape-${randomBytes(12).toString('hex')}`;

interface Sample { name: string; labels: Record<string, string>; value: number }

/** A small Prometheus text-format (0.0.4) parser: HELP/TYPE comments, `name{l="v",…} value` samples. */
function parseExposition(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1]!, type[2]!);
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    if (Number.isNaN(value)) throw new Error(`bad value: ${line}`);
    samples.push({ name: m[1]!, labels, value });
  }
  return { samples, types };
}

describe('/metrics after a scripted run with a pause and a takeover', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let admin: string;
  let alice: string;
  let viewer: Viewer;

  beforeAll(async () => {
    hub = await startTestHub({ env: { HANDOFF_METRICS_TOKEN: METRICS_TOKEN, PAUSE_SOFT_GRACE: '1s' } });
    admin = await hub.token('admin');
    alice = await hub.token('operator');
    viewer = await Viewer.connect(hub.url, await hub.token('observer'));
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`met-${randomBytes(3).toString('hex')}`), capacity: 2 });
  });
  afterAll(async () => {
    viewer?.close();
    await worker?.stop();
    await hub?.stop();
  });

  it('answers 401 without a token, 403 to an operator, 200 to an admin and to HANDOFF_METRICS_TOKEN', async () => {
    expect((await api(hub.url, null, 'GET', '/metrics')).status).toBe(401);
    expect((await api(hub.url, 'not-a-token', 'GET', '/metrics')).status).toBe(401);
    expect((await api(hub.url, alice, 'GET', '/metrics')).status).toBe(403);
    expect((await api(hub.url, admin, 'GET', '/metrics')).status).toBe(200);
    expect((await api(hub.url, METRICS_TOKEN, 'GET', '/metrics')).status).toBe(200);
  });

  it('exposes the listed series with sane values', async () => {
    const created = await api(hub.url, alice, 'POST', '/api/task-runs', { command: { script: 'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.1; done' } });
    const runId = created.body.id as string;
    await emitAck(viewer.socket, 'run:subscribe', { runId });
    await emitAck(viewer.socket, 'term:subscribe', { runId });
    await viewer.untilStatus(runId, ['running']);
    await viewer.until('web share READY', () => viewer.runs.get(runId)?.sessions.some((s) => s.provider === 'web' && s.status === 'READY'));
    const applied = (seq: number) => viewer.until(`seq ${seq} applied`, () => (viewer.runs.get(runId)?.control.appliedSeq ?? 0) >= seq);
    const control = (body: object) => api(hub.url, alice, 'POST', `/api/task-runs/${runId}/control`, body);

    expect((await control({ action: 'pause', mode: 'hard' })).status).toBe(200);
    await applied(1);
    expect((await control({ action: 'resume' })).status).toBe(200);
    await applied(2);
    expect((await control({ action: 'takeover', mode: 'hard', ttlMinutes: 5 })).status).toBe(200);
    await applied(3);
    const aliceSocket = await connect(hub.url, '/dashboard', alice);
    const marker = `typed-${randomBytes(3).toString('hex')}`;
    expect(await emitAck(aliceSocket, 'term:input', { runId, data: `echo ${marker}\r` })).toMatchObject({ ok: true });
    await viewer.until('typed output', () => joinFrames([...new Map((viewer.live.get(runId) ?? []).map((f) => [f.seq, f])).values()]).includes(marker));
    expect((await control({ action: 'handback', summary: 'over to you' })).status).toBe(200);
    await applied(4);
    // A policy refusal (an operator's takeover beyond 30 min needs an admin) and socket rate limiting (burst 100 by default).
    expect((await control({ action: 'takeover', ttlMinutes: 60 })).body.error.code).toBe('APPROVAL_REQUIRED');
    const acks = await Promise.all(Array.from({ length: 150 }, () => emitAck(aliceSocket, 'runs:subscribe', {})));
    expect(acks.some((a) => !a.ok && a.error.code === 'RATE_LIMITED')).toBe(true);

    const res = await fetch(`${hub.url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const { samples, types } = parseExposition(await res.text());
    const sum = (name: string, labels: Record<string, string> = {}) =>
      samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
    const has = (name: string) => samples.some((s) => s.name === name);

    for (const h of ['handoff_control_push_seconds', 'handoff_term_input_ack_seconds', 'handoff_frame_fanout_lag_seconds', 'handoff_recording_flush_seconds', 'handoff_audit_append_seconds', 'handoff_http_request_duration_seconds']) {
      expect(types.get(h), h).toBe('histogram');
      expect(sum(`${h}_count`), `${h}_count`).toBeGreaterThan(0);
      expect(sum(`${h}_sum`), `${h}_sum`).toBeGreaterThanOrEqual(0);
    }
    // Four control changes, each applied by the worker; push → applied well under the reference's 5 s.
    expect(sum('handoff_control_push_seconds_count')).toBeGreaterThanOrEqual(4);
    expect(sum('handoff_control_push_seconds_sum') / sum('handoff_control_push_seconds_count')).toBeLessThan(5);
    expect(sum('handoff_control_push_seconds_count', { effective: 'operator' })).toBeGreaterThanOrEqual(1);
    expect(sum('handoff_term_input_ack_seconds_count')).toBeGreaterThanOrEqual(1);
    // Route patterns, never raw paths: a bounded label set.
    expect(sum('handoff_http_request_duration_seconds_count', { method: 'POST', route: '/api/task-runs/{id}/control', status: '200' })).toBe(4);
    expect(samples.filter((s) => s.name.startsWith('handoff_http')).some((s) => /[0-9a-f]{8}-[0-9a-f]{4}/.test(s.labels.route ?? ''))).toBe(false);

    for (const g of ['handoff_sockets', 'handoff_runs', 'handoff_workers_connected', 'handoff_live_sessions', 'handoff_sweeper_leader', 'handoff_recording_pending_frames']) expect(types.get(g), g).toBe('gauge');
    expect(sum('handoff_sockets', { namespace: '/worker' })).toBe(1);
    expect(sum('handoff_sockets', { namespace: '/dashboard' })).toBe(2);
    expect(sum('handoff_runs', { status: 'running' })).toBe(1);
    expect(sum('handoff_runs', { status: 'queued' })).toBe(0);
    expect(has('handoff_runs')).toBe(true);
    expect(sum('handoff_workers_connected')).toBe(1);
    expect(sum('handoff_live_sessions', { provider: 'web', status: 'READY' })).toBe(1);
    expect(sum('handoff_sweeper_leader')).toBe(1); // no Redis: the only node leads
    expect(sum('handoff_sweeper_lead_age_seconds')).toBeLessThan(5);
    expect(sum('handoff_recording_pending_frames')).toBeGreaterThanOrEqual(0);

    for (const c of ['handoff_rate_limited_total', 'handoff_policy_refusals_total']) expect(types.get(c), c).toBe('counter');
    expect(sum('handoff_rate_limited_total', { edge: 'socket' })).toBeGreaterThan(0);
    expect(sum('handoff_policy_refusals_total', { action: 'takeover', outcome: 'approval_required' })).toBe(1);
    aliceSocket.close();
  });
});
