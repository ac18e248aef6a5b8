import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, emitAck, Viewer } from '../support/clients.js';
import { startHubProcess, tokenIssuer, type HubProcess, type TokenIssuer } from '../support/hub-process.js';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.js';
import { expectNumberedLines, numberedLinesScript, recordedText } from '../support/recording.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

const OUTAGE_MS = 15_000;
const LINES = 450; // ~25 s at 0.05 s a line: both runs stream before, during and after the outage
const TERMINAL = ['succeeded', 'failed', 'cancelled', 'lost'];

interface Probe {
  at: number;
  what: string;
  status: number;
  retryAfter: string | null;
  code: string | undefined;
  ms: number;
}

// PostgreSQL (a cluster of the test's own) stops for 15 s under a real hub process and a
// real worker streaming two runs, while commands keep arriving.
describe('chaos: PostgreSQL stops for 15 s', () => {
  let pg: PgCluster;
  let tokens: TokenIssuer;
  let hub: HubProcess;
  let worker: WorkerProcess;
  let operator: string;
  let admin: string;
  let viewer: Viewer;

  beforeAll(async () => {
    pg = await startPgCluster();
    tokens = await tokenIssuer(pg.url); // migrates the fresh cluster before the hub starts
    // The outage lasts three times WORKER_LOST_AFTER: heartbeats that could not be recorded
    // must not make the healthy worker (and its runs) lost when the database returns.
    hub = await startHubProcess({ databaseUrl: pg.url, env: { HEARTBEAT_INTERVAL: '1s', WORKER_LOST_AFTER: '5s', SWEEP_INTERVAL: '200ms' } });
    operator = await tokens.token('operator');
    admin = await tokens.token('admin'); // audit.read
    viewer = await Viewer.connect(hub.url, await tokens.token('observer'));
    worker = startWorker({ hubUrl: hub.url, token: await tokens.workerToken(`pg-chaos-${randomBytes(3).toString('hex')}`), capacity: 2 });
  });
  afterAll(async () => {
    viewer?.close();
    await worker?.stop();
    await hub?.stop();
    await tokens?.close().catch(() => {});
    await pg?.destroy();
  });

  it('answers 503 UNAVAILABLE with Retry-After (never 500) while it is down; recovers without a restart; nothing is lost', async () => {
    const runIds: string[] = [];
    for (const p of ['pa', 'pb']) {
      const res = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: numberedLinesScript(p, LINES) } });
      expect(res.status).toBe(201);
      runIds.push(res.body.id as string);
      await emitAck(viewer.socket, 'run:subscribe', { runId: res.body.id });
      await emitAck(viewer.socket, 'term:subscribe', { runId: res.body.id });
    }
    const liveText = (runId: string) => (viewer.live.get(runId) ?? []).map((f) => f.data).join('');
    await viewer.until('both runs streaming', () => liveText(runIds[0]!).includes('pa-20') && liveText(runIds[1]!).includes('pb-20'), 30_000);

    const probes: Probe[] = [];
    const probe = async (what: string, method: string, path: string, body?: unknown) => {
      const started = Date.now();
      const headers: Record<string, string> = { authorization: `Bearer ${operator}` };
      if (body !== undefined) headers['content-type'] = 'application/json';
      const res = await fetch(`${hub.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const json = (await res.json().catch(() => null)) as { error?: { code?: string } } | null;
      probes.push({ at: started, what, status: res.status, retryAfter: res.headers.get('retry-after'), code: json?.error?.code, ms: Date.now() - started });
    };
    const readyz = async () => (await fetch(`${hub.url}/readyz`)).status;

    const framesBefore = runIds.map((id) => viewer.live.get(id)?.length ?? 0);
    const stoppedAt = Date.now();
    await pg.stop('fast');
    const readyDuring: number[] = [];
    while (Date.now() - stoppedAt < OUTAGE_MS) {
      const [runId] = runIds;
      await Promise.all([
        probe('list runs', 'GET', '/api/task-runs'),
        probe('get run', 'GET', `/api/task-runs/${runId}`),
        probe('send message', 'POST', `/api/task-runs/${runId}/operator-messages`, { message: 'during the outage' }),
        probe('pause', 'POST', `/api/task-runs/${runIds[1]}/control`, { action: 'pause', mode: 'soft' }),
        probe('create run', 'POST', '/api/task-runs', { command: { script: 'echo never' } }),
        readyz().then((s) => void readyDuring.push(s)),
      ]);
      await new Promise((r) => setTimeout(r, 500));
    }
    // Live frames kept flowing to the viewer while nothing could be recorded.
    const framesDuring = runIds.map((id, i) => (viewer.live.get(id)?.length ?? 0) - framesBefore[i]!);

    await pg.start();
    const startedAt = Date.now();
    let readyAfterMs = -1;
    let servedAfterMs = -1;
    while (readyAfterMs < 0 || servedAfterMs < 0) {
      if (readyAfterMs < 0 && (await readyz()) === 200) readyAfterMs = Date.now() - startedAt;
      if (servedAfterMs < 0 && (await api(hub.url, operator, 'GET', '/api/task-runs')).status === 200) servedAfterMs = Date.now() - startedAt;
      if (Date.now() - startedAt > 15_000) throw new Error('the hub did not recover within 15 s of the database');
      await new Promise((r) => setTimeout(r, 20));
    }

    expect(probes.length).toBeGreaterThan(50);
    expect(probes.filter((p) => p.status === 500)).toEqual([]);
    for (const p of probes) {
      expect(p, `${p.what} during the outage`).toMatchObject({ status: 503, code: 'UNAVAILABLE' });
      expect(Number(p.retryAfter), `${p.what}: Retry-After`).toBeGreaterThan(0);
    }
    const slowest = Math.max(...probes.map((p) => p.ms));
    expect(slowest).toBeLessThan(3000); // a dead database answers fast (connection waits are bounded), no hangs
    expect(readyDuring.every((s) => s === 503)).toBe(true);
    expect(framesDuring.every((n) => n > 0)).toBe(true);

    for (const runId of runIds) {
      const done = await viewer.untilStatus(runId, TERMINAL, 60_000);
      expect(done.status).toBe('succeeded');
      const verify = await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events/verify`);
      expect(verify.status).toBe(200);
      expect(verify.body.ok).toBe(true);
    }
    expect(hub.alive()).toBe(true);
    // Nothing the outage caused is an unexplained failure: no unhandled rejection, no INTERNAL.
    const errors = hub.output().split('\n').filter((l) => l.includes('"level":50')).map((l) => (JSON.parse(l) as { msg: string }).msg);
    expect(errors.filter((m) => /unhandled|request failed|socket handler failed|handshake failed/.test(m))).toEqual([]);

    const latencies = probes.map((p) => p.ms).sort((x, y) => x - y);
    console.info(
      `PostgreSQL outage ${OUTAGE_MS} ms: ${probes.length} REST calls answered 503 (p50 ${latencies[Math.floor(latencies.length / 2)]} ms, max ${slowest} ms); ` +
        `live frames during it ${framesDuring.join('/')}; after restart /readyz 200 in ${readyAfterMs} ms, REST 200 in ${servedAfterMs} ms; ` +
        `hub error lines: ${JSON.stringify(Object.fromEntries([...new Set(errors)].map((m) => [m, errors.filter((e) => e === m).length])))}`,
    );
    // The guarantee: every frame the runs printed is recorded once, in order, across the outage
    // (terminal.ts owns the recording; the live view tells a recording gap from a lost frame).
    const recorded = await Promise.all(runIds.map((id) => recordedText(hub.url, admin, id)));
    const missing = (text: string, prefix: string) => {
      const lines = new Set(text.replace(/\r\n/g, '\n').split('\n'));
      return Array.from({ length: LINES }, (_, i) => `${prefix}-${i + 1}`).filter((l) => !lines.has(l));
    };
    console.info(
      `lines missing from the recordings: ${JSON.stringify([missing(recorded[0]!, 'pa'), missing(recorded[1]!, 'pb')])}, ` +
        `from the live view: ${JSON.stringify([missing(liveText(runIds[0]!), 'pa'), missing(liveText(runIds[1]!), 'pb')])}`,
    );
    expectNumberedLines(recorded[0]!, 'pa', LINES);
    expectNumberedLines(recorded[1]!, 'pb', LINES);
  });
});
