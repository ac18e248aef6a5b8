import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Run } from '@handoff/shared';
import { api, eventually } from '../support/clients.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startHubProcess, tokenIssuer, type HubProcess, type TokenIssuer } from '../support/hub-process.js';
import { recordedText } from '../support/recording.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

// A worker holds at most 4 Mi characters of a run's output in memory (FrameBatcher
// `roomChars`); the rest waits in the run's capture file and is read on as the hub acks.
// Before, past its cap the worker dropped output ("dropped while the hub was unreachable"),
// and when a burst left it over the cap the run's last line could vanish from the
// recording for good.

const LINES = 120_000; // 100 bytes each: 12 MB, three times the worker's bound
const PAD = 'x'.repeat(92);

/** Prints `bl-000001 xxx…` … `bl-120000 xxx…` (100 bytes a line) as fast as awk can, then the end marker. */
const burst = `awk 'BEGIN { for (i = 1; i <= ${LINES}; i++) printf "bl-%06d ${PAD}\\n", i }'; echo backlog-end`;

/** Every numbered line once and in order, then the marker; names the first line that is not. */
function expectWhole(text: string): void {
  const lines = text.split('\n').filter((l) => l.startsWith('bl-') || l === 'backlog-end');
  let firstWrong = -1;
  for (let i = 0; i < LINES && firstWrong < 0; i += 1) if (lines[i] !== `bl-${String(i + 1).padStart(6, '0')} ${PAD}`) firstWrong = i;
  expect({ count: lines.length, firstWrong, firstWrongLine: firstWrong < 0 ? null : (lines[firstWrong] ?? null)?.slice(0, 20), last: lines.at(-1) }).toEqual({
    count: LINES + 1,
    firstWrong: -1,
    firstWrongLine: null,
    last: 'backlog-end',
  });
}

describe('chaos: more output than the worker holds in memory', () => {
  let db: TestDatabase;
  let tokens: TokenIssuer;
  let hub: HubProcess;
  let worker: WorkerProcess;
  let operator: string;
  const flagDir = mkdtempSync(join(tmpdir(), 'handoff-backlog-'));

  const runOf = async (runId: string) => (await api(hub.url, operator, 'GET', `/api/task-runs/${runId}`)).body as Run;
  const ended = (runId: string) =>
    eventually('the run ended', async () => {
      const r = await runOf(runId).catch(() => null);
      return r && ['succeeded', 'failed', 'lost', 'cancelled'].includes(r.status) ? r : undefined;
    }, 60_000);

  beforeAll(async () => {
    db = await createTestDatabase();
    tokens = await tokenIssuer(db.url);
    hub = await startHubProcess({ databaseUrl: db.url, env: { HEARTBEAT_INTERVAL: '500ms', WORKER_LOST_AFTER: '5s', WORKER_RECLAIM_GRACE: '30s', LOG_LEVEL: 'info' } });
    operator = await tokens.token('operator');
    worker = startWorker({ hubUrl: hub.url, token: await tokens.workerToken(`backlog-${randomBytes(3).toString('hex')}`) });
  });
  afterAll(async () => {
    await worker?.stop();
    await hub?.stop();
    await tokens?.close();
    await db?.drop();
    rmSync(flagDir, { recursive: true, force: true });
  });

  it('a 12 MB burst with nobody watching, the run ending right after it: the recording holds every line once, in order, and the last line', async () => {
    const created = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: burst } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const runId = created.body.id as string;
    const done = await ended(runId);
    expect({ status: done.status, exitCode: done.exitCode }).toEqual({ status: 'succeeded', exitCode: 0 });
    expectWhole(await recordedText(hub.url, operator, runId));
    expect(worker.output()).not.toMatch(/dropped/);
  });

  it('the hub is down (SIGKILL) while the run prints 12 MB and ends: once it is back, the worker delivers all of it and then the exit', async () => {
    const go = join(flagDir, 'go');
    const created = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: `while [ ! -e ${go} ]; do sleep 0.05; done; ${burst}` } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const runId = created.body.id as string;
    await eventually('the run running', async () => (await runOf(runId)).status === 'running', 20_000);

    await hub.kill('SIGKILL');
    writeFileSync(go, '');
    // The run prints everything and exits while no hub is there: the worker holds its bound, the rest waits on disk.
    await new Promise((r) => setTimeout(r, 3000));
    await hub.restart();

    const done = await ended(runId);
    expect({ status: done.status, exitCode: done.exitCode }).toEqual({ status: 'succeeded', exitCode: 0 });
    expectWhole(await recordedText(hub.url, operator, runId));
    expect(worker.output()).not.toMatch(/dropped/);
  });
});
