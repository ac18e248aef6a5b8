import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { appendFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { OutboxWatcher } from './outbox-watcher.js';
import { AGENT_CLI } from './run-script.js';
import { TmuxRun } from './tmux-run.js';
import { TMUX, until } from './testing/shares.js';

const execFileAsync = promisify(execFile);
const DEMO_AGENT = fileURLToPath(new URL('./demo-agent.mjs', import.meta.url));

let dir: string;
const watchers: OutboxWatcher[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'handoff-outbox-'));
});
afterEach(() => {
  for (const w of watchers.splice(0)) w.close();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function watched(initial = '') {
  const runDir = await mkdtemp(join(dir, 'run-'));
  const path = join(runDir, 'outbox.jsonl');
  writeFileSync(path, initial, { mode: 0o600 });
  const reasons: string[] = [];
  const watcher = new OutboxWatcher({ path, logger: pino({ level: 'silent' }), onRequestOperator: (r) => reasons.push(r), maxLineBytes: 1024 });
  watchers.push(watcher);
  watcher.start();
  return { path, reasons };
}

const request = (reason: string) => `${JSON.stringify({ type: 'request-operator', reason, ts: new Date().toISOString() })}\n`;

describe('OutboxWatcher', () => {
  it('with a state file, a watcher of a re-adopted run goes on after what the previous one read', async () => {
    const runDir = await mkdtemp(join(dir, 'run-'));
    const path = join(runDir, 'outbox.jsonl');
    const statePath = join(runDir, 'outbox.offset');
    writeFileSync(path, request('first'), { mode: 0o600 });
    const seen: string[] = [];
    const first = new OutboxWatcher({ path, statePath, logger: pino({ level: 'silent' }), onRequestOperator: (r) => seen.push(`1:${r}`) });
    watchers.push(first);
    first.start();
    await until(() => seen.length === 1, 'the first request');
    await new Promise((r) => setTimeout(r, 50)); // the offset is recorded right after the read
    first.close(); // the worker died
    appendFileSync(path, request('while away'));
    const second = new OutboxWatcher({ path, statePath, logger: pino({ level: 'silent' }), onRequestOperator: (r) => seen.push(`2:${r}`) });
    watchers.push(second);
    second.start();
    await until(() => seen.length === 2, 'the request written while no worker watched');
    await new Promise((r) => setTimeout(r, 100));
    expect(seen).toEqual(['1:first', '2:while away']);
  });

  it('reports `handoff-agent request-operator` from the CLI, and what was written before it started', async () => {
    const { path, reasons } = await watched(request('written before the watch'));
    await until(() => reasons.length === 1, 'the earlier request');
    await execFileAsync(process.execPath, [AGENT_CLI, 'request-operator', 'stuck on a flaky test'], { env: { HANDOFF_OUTBOX: path } });
    await until(() => reasons.length === 2, 'the CLI request');
    expect(reasons).toEqual(['written before the watch', 'stuck on a flaky test']);
  });

  it('waits for the newline of a line being written, and skips what is not a request', async () => {
    const { path, reasons } = await watched();
    const line = request('two halves');
    appendFileSync(path, line.slice(0, 20));
    await new Promise((r) => setTimeout(r, 150));
    expect(reasons).toEqual([]);
    appendFileSync(path, line.slice(20));
    await until(() => reasons.length === 1, 'the completed line');
    appendFileSync(path, 'not json\n{"type":"something-else"}\n{"type":"request-operator","reason":"   "}\n');
    appendFileSync(path, `{"type":"request-operator","reason":"${'x'.repeat(2000)}"}\n`); // over maxLineBytes: skipped whole
    appendFileSync(path, request('after the noise'));
    await until(() => reasons.length === 2, 'the request after the noise');
    // An over-long line still being written is dropped at once, and so is its end when it comes.
    appendFileSync(path, `{"type":"request-operator","reason":"${'y'.repeat(1500)}`);
    await new Promise((r) => setTimeout(r, 150));
    appendFileSync(path, `"}\n${request('after the long one')}`);
    await until(() => reasons.length === 3, 'the request after the long line');
    expect(reasons).toEqual(['two halves', 'after the noise', 'after the long one']);
  });

  it('the demo agent, using the SDK in a real run, asks for an operator at the step it is told', async () => {
    const reasons: string[] = [];
    const out = { text: '' };
    const run = await TmuxRun.start({
      runId: randomUUID(),
      runsDir: dir,
      command: { argv: [process.execPath, DEMO_AGENT] },
      cwd: null,
      env: { PATH: process.env.PATH, LANG: 'C.UTF-8', DEMO_AGENT_STEPS: '3', DEMO_AGENT_STEP_MS: '30', DEMO_AGENT_REQUEST_OPERATOR_AT: '2' },
      cols: 120,
      rows: 30,
      tmuxBin: TMUX,
      onOutput: (t) => (out.text += t),
      logger: pino({ level: 'silent' }),
    });
    const watcher = new OutboxWatcher({ path: run.outboxPath, logger: pino({ level: 'silent' }), onRequestOperator: (r) => reasons.push(r) });
    watchers.push(watcher);
    watcher.start();
    expect((await run.result).exitCode).toBe(0);
    expect(out.text).toContain('all 3 steps finished');
    expect(reasons).toEqual(['demo: stuck at step 2']);
  });
});
