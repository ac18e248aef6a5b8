import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { appendLine, RunInbox } from './run-inbox.js';
import { AGENT_CLI } from './run-script.js';
import { TmuxRun } from './tmux-run.js';
import { TMUX, until } from './testing/shares.js';

const execFileAsync = promisify(execFile);
const SDK = pathToFileURL(join(AGENT_CLI, '..', 'index.mjs')).href;
const lf = (s: string) => s.replaceAll('\r\n', '\n');

let dir: string;
const runs: TmuxRun[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'handoff-inbox-'));
});
afterEach(async () => {
  await Promise.all(runs.splice(0).map((r) => r.cancel()));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const message = (text: string, actor = 'alice') => ({ messageId: randomUUID(), ts: new Date().toISOString(), actor, message: text });
const inboxLines = (path: string) => readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));

describe('RunInbox', () => {
  it('appends each message once, in order, as a {ts, actor, message} JSON line — also across a redelivery to a new inbox', async () => {
    const runDir = await mkdtemp(join(dir, 'run-'));
    const inbox = new RunInbox({ dir: runDir, logger: pino({ level: 'silent' }) });
    const first = message('first');
    const second = message('second ✓ "quoted"\nand a second line', 'bob');
    // Concurrent deliveries (a redelivery racing the original) keep the hub's order and append once.
    const results = await Promise.all([inbox.deliver(first), inbox.deliver(second), inbox.deliver(first)]);
    expect(results).toEqual([true, true, false]);
    const path = join(runDir, 'inbox.jsonl');
    expect(inboxLines(path)).toEqual([
      { ts: first.ts, actor: 'alice', message: 'first' },
      { ts: second.ts, actor: 'bob', message: 'second ✓ "quoted"\nand a second line' },
    ]);
    expect(statSync(path).mode & 0o777).toBe(0o600);

    // After a worker restart the hub redelivers what it has no ack for: the ids on disk still count.
    const again = new RunInbox({ dir: runDir, logger: pino({ level: 'silent' }) });
    const third = message('third');
    expect(await again.deliver(second)).toBe(false);
    expect(await again.deliver(third)).toBe(true);
    expect(inboxLines(path).map((l) => l.message)).toEqual(['first', 'second ✓ "quoted"\nand a second line', 'third']);
  });

  it('reaches an agent in a real run through the SDK: onMessage in order and once each, hand-back packets to onHandoff only', async () => {
    // A Node agent using the SDK as an agent would: print messages and hand-back packets as they arrive, stop on "bye".
    const go = join(dir, `go-${randomUUID()}`);
    const agent = [
      "import { existsSync } from 'node:fs';",
      `import { onMessage, onHandoff } from ${JSON.stringify(SDK)};`,
      // Subscribes only once told to, so that one message is surely in the inbox before.
      `while (!existsSync(${JSON.stringify(go)})) await new Promise((r) => setTimeout(r, 20));`,
      // Each subscription follows the inbox on its own: ends once both saw their last entry.
      'let bye = false;',
      'let handoff = false;',
      'const end = () => { if (bye && handoff) { stop(); stopHandoffs(); clearInterval(alive); } };',
      'const stop = onMessage((m) => {',
      '  console.log(`got ${m.actor}: ${m.message}`);',
      "  bye ||= m.message === 'bye';",
      '  end();',
      '});',
      'const stopHandoffs = onHandoff((p) => { console.log(`handoff: ${p.summary}`); handoff = true; end(); });',
      'const alive = setInterval(() => undefined, 1000);',
      "console.log('ready');",
    ].join('\n');
    const out = { text: '' };
    const run = await TmuxRun.start({
      runId: randomUUID(),
      runsDir: dir,
      command: { argv: [process.execPath, '--input-type=module', '-e', agent] },
      cwd: null,
      env: { PATH: process.env.PATH, LANG: 'C.UTF-8' },
      cols: 120,
      rows: 30,
      tmuxBin: TMUX,
      onOutput: (t) => (out.text += t),
      logger: pino({ level: 'silent' }),
    });
    runs.push(run);
    const inbox = new RunInbox({ dir: run.dir, logger: pino({ level: 'silent' }) });
    await inbox.deliver(message('before the agent listens')); // delivered from the start of the inbox
    writeFileSync(go, '');
    await until(() => out.text.includes('ready'), 'agent ready');
    const duplicate = message('only once');
    await inbox.deliver(duplicate);
    await inbox.deliver(duplicate);
    // A hand-back packet goes to onHandoff only (the hand-back feature writes these).
    await appendLine(run.inboxPath, `${JSON.stringify({ type: 'handoff', ts: new Date().toISOString(), actor: 'alice', summary: 'fixed the config' })}\n`);
    await inbox.deliver(message('ünïcødé 😀', 'bob'));
    await inbox.deliver(message('bye'));
    expect((await run.result).exitCode).toBe(0);
    const lines = lf(out.text).split('\n').filter(Boolean);
    // The message already there comes synchronously on subscribing, before "ready"; then each once, in order.
    expect(lines.filter((l) => !l.startsWith('handoff:'))).toEqual([
      'got alice: before the agent listens',
      'ready',
      'got alice: only once',
      'got bob: ünïcødé 😀',
      'got alice: bye',
    ]);
    expect(lines.filter((l) => l.startsWith('handoff:'))).toEqual(['handoff: fixed the config']);
  });

  it('`handoff-agent inbox` prints messages and hand-back packets in inbox order (--json: as in the inbox)', async () => {
    const runDir = await mkdtemp(join(dir, 'run-'));
    const inbox = new RunInbox({ dir: runDir, logger: pino({ level: 'silent' }) });
    const a = message('hello there');
    const b = message('line one\nline two', 'bob');
    const packet = {
      type: 'handoff' as const,
      ts: new Date().toISOString(),
      actor: 'carol',
      actorId: 'u3',
      summary: 'fixed it',
      correlationId: null,
      context: { cwd: '/srv', env: { A: '1' }, scrollbackSeq: 9, commands: [], recording: '/api/task-runs/r/recording.cast' },
    };
    await inbox.deliver(a);
    expect(await inbox.deliverHandoff(4, packet)).toBe(true);
    expect(await inbox.deliverHandoff(4, packet)).toBe(false); // once per control seq
    await inbox.deliver(b);
    const env = { PATH: process.env.PATH, HANDOFF_INBOX: join(runDir, 'inbox.jsonl') };
    const plain = await execFileAsync(process.execPath, [AGENT_CLI, 'inbox'], { env });
    expect(plain.stdout).toBe(
      `${a.ts} alice: hello there\n` +
        `${packet.ts} carol handed control back: fixed it\n` +
        '    cwd /srv; 1 env var (--json shows them, secrets redacted); scrollback up to frame 9 of /api/task-runs/r/recording.cast\n' +
        `${b.ts} bob: line one\nline two\n`,
    );
    const json = await execFileAsync(process.execPath, [AGENT_CLI, 'inbox', '--json'], { env });
    expect(json.stdout.trim().split('\n').map((l) => JSON.parse(l))).toEqual([
      { ts: a.ts, actor: 'alice', message: 'hello there' },
      packet,
      { ts: b.ts, actor: 'bob', message: 'line one\nline two' },
    ]);
  });
});
