import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkpoint, controlState, onHandoff, onInbox, onMessage, requestOperator, type InboxEntry, type OperatorMessage } from '../agent-sdk/index.mjs';
import { readCheckpoint, writeControlFile } from './run-control.js';
import { appendLine } from './run-inbox.js';
import { AGENT_CLI } from './run-script.js';
import { until } from './testing/shares.js';

// The SDK runs inside agent processes, with plain Node and no dependencies. Here it is
// driven in-process (with explicit paths) and through its CLI as a child process — with
// the Debian Node 20 where the machine has one, to hold the "Node ≥ 20" promise.

const execFileAsync = promisify(execFile);
const SYSTEM_NODE = '/usr/bin/node';
const systemNodeMajor = existsSync(SYSTEM_NODE) ? Number(execFileSync(SYSTEM_NODE, ['-p', 'process.versions.node.split(".")[0]'], { encoding: 'utf8' })) : 0;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'handoff-sdk-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const runDir = () => mkdtemp(join(dir, 'run-'));
const PACKET = {
  type: 'handoff',
  ts: '2025-05-01T12:00:00.000Z',
  actor: 'Ada',
  actorId: 'u1',
  summary: 'fixed the config\nmigrations pass',
  correlationId: null,
  context: { cwd: '/srv/app', env: { API_TOKEN: '[REDACTED:env]', HOME: '/root' }, scrollbackSeq: 12, recording: '/api/task-runs/r1/recording.cast' },
} as const;
const pending = async (p: Promise<unknown>) => (await Promise.race([p.then(() => 'settled'), sleep(200, 'pending')])) === 'pending';

describe('agent SDK: checkpoint', () => {
  it('resolves at once outside a run, without a control file, and while control is with the agent', async () => {
    const d = await runDir();
    const controlPath = join(d, 'control.json');
    await checkpoint(); // no HANDOFF_CONTROL in the test process
    await checkpoint({ controlPath });
    writeControlFile(d, { seq: 2, state: 'agent', mode: null });
    await checkpoint({ controlPath });
    expect(controlState({ controlPath })).toEqual({ seq: 2, state: 'agent', mode: null });
    expect(existsSync(join(d, 'checkpoint.json'))).toBe(false); // the worker hears nothing while the agent may run
  });

  it('while paused: marks the seq it honours (again for a newer pause) and resolves once control is back', async () => {
    const d = await runDir();
    const controlPath = join(d, 'control.json');
    writeControlFile(d, { seq: 4, state: 'paused', mode: 'soft' });
    const halted = checkpoint({ controlPath });
    expect(await pending(halted)).toBe(true);
    expect(await readCheckpoint(d)).toEqual({ seq: 4, pid: process.pid });
    writeControlFile(d, { seq: 5, state: 'operator', mode: null });
    await until(async () => (await readCheckpoint(d))?.seq === 5, 'the marker of seq 5');
    expect(await pending(halted)).toBe(true);
    writeControlFile(d, { seq: 6, state: 'agent', mode: null });
    await halted;
  });

  it('stops waiting when its signal aborts', async () => {
    const d = await runDir();
    writeControlFile(d, { seq: 1, state: 'paused', mode: 'soft' });
    const ac = new AbortController();
    const halted = checkpoint({ controlPath: join(d, 'control.json'), signal: ac.signal });
    ac.abort(new Error('agent shutting down'));
    await expect(halted).rejects.toThrow('agent shutting down');
  });
});

describe('agent SDK: inbox and outbox', () => {
  it('onMessage gets messages only, onHandoff hand-back packets only, each in order; unsubscribing stops both', async () => {
    const d = await runDir();
    const inboxPath = join(d, 'inbox.jsonl');
    writeFileSync(inboxPath, '', { mode: 0o600 });
    await appendLine(inboxPath, `${JSON.stringify({ ts: 't1', actor: 'alice', message: 'old' })}\n`);
    const all: OperatorMessage[] = [];
    const fresh: OperatorMessage[] = [];
    const packets: unknown[] = [];
    const stopAll = onMessage((m) => all.push(m), { inboxPath });
    const stopFresh = onMessage((m) => fresh.push(m), { inboxPath, fromStart: false });
    const stopPackets = onHandoff((p) => packets.push(p), { inboxPath });
    expect(all.map((m) => m.message)).toEqual(['old']); // synchronously, on subscribing

    await appendLine(inboxPath, `${JSON.stringify({ ts: 't2', actor: 'bob', message: 'new' })}\n`);
    await appendLine(inboxPath, `${JSON.stringify({ type: 'handoff', ts: 't3', summary: 'back to you' })}\n`);
    await appendLine(inboxPath, 'garbage that is not JSON\n');
    await appendLine(inboxPath, `${JSON.stringify({ ts: 't4', actor: 'bob', message: 'newer' })}\n`);
    await until(() => all.length === 3 && fresh.length === 2 && packets.length === 1, 'every entry');
    expect(all).toEqual([
      { ts: 't1', actor: 'alice', message: 'old' },
      { ts: 't2', actor: 'bob', message: 'new' },
      { ts: 't4', actor: 'bob', message: 'newer' },
    ]);
    expect(fresh.map((m) => m.message)).toEqual(['new', 'newer']);
    expect(packets).toEqual([{ type: 'handoff', ts: 't3', summary: 'back to you' }]);

    stopAll();
    stopFresh();
    stopPackets();
    await appendLine(inboxPath, `${JSON.stringify({ ts: 't5', actor: 'bob', message: 'after' })}\n`);
    await sleep(150);
    expect(all).toHaveLength(3);
  });

  it('onInbox gets messages and hand-back packets together, in file order', async () => {
    const d = await runDir();
    const inboxPath = join(d, 'inbox.jsonl');
    writeFileSync(inboxPath, `${JSON.stringify({ ts: 't1', actor: 'alice', message: 'hi' })}\n${JSON.stringify(PACKET)}\n`, { mode: 0o600 });
    const entries: InboxEntry[] = [];
    const stop = onInbox((e) => entries.push(e), { inboxPath });
    await appendLine(inboxPath, `${JSON.stringify({ ts: 't3', actor: 'bob', message: 'later' })}\n`);
    await until(() => entries.length === 3, 'every entry');
    stop();
    expect(entries).toEqual([{ type: 'message', ts: 't1', actor: 'alice', message: 'hi' }, PACKET, { type: 'message', ts: 't3', actor: 'bob', message: 'later' }]);
  });

  it('requestOperator appends one request line; false outside a run; refuses an empty reason', async () => {
    const d = await runDir();
    const outboxPath = join(d, 'outbox.jsonl');
    expect(await requestOperator('help')).toBe(false); // no HANDOFF_OUTBOX in the test process
    await expect(requestOperator('  ', { outboxPath })).rejects.toThrow(TypeError);
    expect(await requestOperator('need a human', { outboxPath })).toBe(true);
    const [line, ...rest] = readFileSync(outboxPath, 'utf8').split('\n');
    expect(rest).toEqual(['']);
    expect(JSON.parse(line!)).toEqual({ type: 'request-operator', reason: 'need a human', ts: expect.any(String) });
  });
});

describe('handoff-agent CLI', () => {
  it('explains its usage and fails clearly outside a run', async () => {
    const run = (args: string[]) =>
      execFileAsync(process.execPath, [AGENT_CLI, ...args], { env: { PATH: process.env.PATH } }).then(
        (r) => ({ code: 0, ...r }),
        (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
      );
    expect(await run(['--help'])).toMatchObject({ code: 0, stdout: expect.stringContaining('usage: handoff-agent') });
    expect(await run([])).toMatchObject({ code: 2, stderr: expect.stringContaining('a command is needed') });
    expect(await run(['frobnicate'])).toMatchObject({ code: 2, stderr: expect.stringContaining('unknown command "frobnicate"') });
    expect(await run(['request-operator'])).toMatchObject({ code: 2, stderr: expect.stringContaining('needs a reason') });
    expect(await run(['request-operator', 'help'])).toMatchObject({ code: 2, stderr: expect.stringContaining('not inside a Handoff run') });
    expect(await run(['inbox'])).toMatchObject({ code: 2, stderr: expect.stringContaining('not inside a Handoff run') });
    expect(await run(['checkpoint'])).toMatchObject({ code: 0 }); // outside a run there is nothing to wait for
  });

  it('`inbox` prints messages and hand-back packets in order, readable or as the JSON lines', async () => {
    const d = await runDir();
    const inboxPath = join(d, 'inbox.jsonl');
    const message = { ts: 't1', actor: 'alice', message: 'hi' };
    writeFileSync(inboxPath, `${JSON.stringify(message)}\n${JSON.stringify(PACKET)}\n`, { mode: 0o600 });
    const env = { HANDOFF_INBOX: inboxPath };
    const text = await execFileAsync(process.execPath, [AGENT_CLI, 'inbox'], { env });
    expect(text.stdout).toBe(
      [
        't1 alice: hi',
        '2025-05-01T12:00:00.000Z Ada handed control back: fixed the config',
        '    migrations pass',
        '    cwd /srv/app; 2 env vars (--json shows them, secrets redacted); scrollback up to frame 12 of /api/task-runs/r1/recording.cast',
        '',
      ].join('\n'),
    );
    const json = await execFileAsync(process.execPath, [AGENT_CLI, 'inbox', '--json'], { env });
    expect(json.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l))).toEqual([message, PACKET]);
  });

  it.runIf(systemNodeMajor >= 20)('`checkpoint` blocks while paused and exits 0 once resumed — on the system Node 20', async () => {
    const d = await runDir();
    writeControlFile(d, { seq: 1, state: 'paused', mode: 'hard' });
    const child = spawn(SYSTEM_NODE, [AGENT_CLI, 'checkpoint'], { env: { HANDOFF_CONTROL: join(d, 'control.json') }, stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await until(async () => (await readCheckpoint(d))?.seq === 1, 'the checkpoint marker');
      expect(await pending(exited)).toBe(true);
      writeControlFile(d, { seq: 2, state: 'agent', mode: null });
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it.runIf(systemNodeMajor >= 20)('`inbox --follow` prints new messages as they come — on the system Node 20', async () => {
    const d = await runDir();
    const inboxPath = join(d, 'inbox.jsonl');
    writeFileSync(inboxPath, `${JSON.stringify({ ts: 't1', actor: 'alice', message: 'first' })}\n`, { mode: 0o600 });
    const child = spawn(SYSTEM_NODE, [AGENT_CLI, 'inbox', '--follow'], { env: { HANDOFF_INBOX: inboxPath }, stdio: ['ignore', 'pipe', 'ignore'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (t: string) => (stdout += t));
    try {
      await until(() => stdout === 't1 alice: first\n', 'the first message');
      await appendLine(inboxPath, `${JSON.stringify({ ts: 't2', actor: 'bob', message: 'second' })}\n`);
      await until(() => stdout === 't1 alice: first\nt2 bob: second\n', 'the second message');
      expect(child.exitCode).toBeNull(); // still following
    } finally {
      child.kill('SIGKILL');
    }
  });
});
