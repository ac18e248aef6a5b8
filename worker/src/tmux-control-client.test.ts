import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sendKeysCommands } from './terminal-input.js';
import { TmuxControlClient } from './tmux-control-client.js';
import { TmuxRun } from './tmux-run.js';
import { pgrep } from './testing/processes.js';
import { useRunHarness } from './testing/run-harness.js';
import { TMUX, until } from './testing/shares.js';

// Real tmux: a pane whose tty is raw (no echo, no line discipline, no signal keys) copies
// every byte it receives into a file, so what the control client typed is read back exactly.

const logger = pino({ level: 'silent' });

/** Keystrokes that exercise every path of the encoding: literal runs, raw bytes, what tmux's parser would interpret. */
const TRICKY = [
  'ls -la\r',
  '\x1b[A', // arrow up
  '\x03', // Ctrl-C
  '\x00', // Ctrl-@ (NUL)
  'é 界 😀',
  "it's \"quoted\" $HOME ~ #not-a-comment {brace} \\back\\slash",
  'a;b;;c\\;',
  '%1 -t --',
  '\t\x7f\x04',
  '\x1bOP', // F1
];

describe('TmuxControlClient', () => {
  let dir = '';
  let socket = '';
  let sink = '';
  let clients: TmuxControlClient[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'handoff-keys-'));
    socket = join(dir, 'tmux.sock');
    sink = join(dir, 'typed');
    execFileSync(TMUX, ['-S', socket, '-f', '/dev/null', 'new-session', '-d', '-s', 'run', '-x', '80', '-y', '24', `stty raw -echo; exec cat > ${sink}`]);
    await until(() => existsSync(sink), 'the pane to copy its input');
    clients = [];
  });
  afterEach(async () => {
    await Promise.all(clients.map((c) => c.close()));
    try {
      execFileSync(TMUX, ['-S', socket, 'kill-server'], { stdio: 'ignore' });
    } catch {
      // already gone
    }
    await rm(dir, { recursive: true, force: true });
  });

  const client = () => {
    const c = new TmuxControlClient({ tmuxBin: TMUX, socket, session: 'run', logger });
    clients.push(c);
    return c;
  };
  const typed = () => readFileSync(sink);
  const clientPids = () => pgrep(`${socket} -C attach-session`);

  it('types a burst of keystrokes byte for byte and in order through one client process', async () => {
    const keys = client();
    const burst = Array.from({ length: 300 }, (_, i) => `${TRICKY[i % TRICKY.length]}<${i}>`);
    // All written at once, none awaited before the next: the order is the client's to keep.
    await Promise.all(burst.map((data) => keys.run(sendKeysCommands('run', data))));
    const expected = Buffer.from(burst.join(''), 'utf8');
    await until(() => typed().length >= expected.length, 'every byte in the pane');
    expect(typed().equals(expected)).toBe(true);
    expect(keys.started).toBe(1);
    expect(clientPids()).toEqual([keys.pid]);
  });

  it('types a 64 KiB paste exactly', async () => {
    const keys = client();
    const paste = Array.from({ length: 4096 }, (_, i) => `界${i % 10}\x01;`).join('').padEnd(64 * 1024, 'x');
    await keys.run(sendKeysCommands('run', paste));
    const expected = Buffer.from(paste, 'utf8');
    await until(() => typed().length >= expected.length, 'the paste in the pane');
    expect(typed().equals(expected)).toBe(true);
  });

  it('starts a new client when the old one was killed; keys caught in the crash are typed at most once, never twice', async () => {
    const keys = client();
    const sent: string[] = [];
    const type = async (data: string) => {
      await keys.run(sendKeysCommands('run', data));
      sent.push(data);
    };
    await type('before ');
    const first = keys.pid!;

    // Killed between two keystrokes: the worker noticed (exit event) before the next one,
    // and the next keys go through a new client, none lost.
    process.kill(first, 'SIGKILL');
    await until(() => keys.pid === null, 'the client’s exit noticed');
    await type('after-idle-kill ');
    expect(keys.pid).not.toBe(first);
    expect(keys.started).toBe(2);

    // Killed and typed into in the same tick: the keys go into the dying client's pipe, its
    // exit is only seen afterwards — the race a keystroke arriving during a crash meets. The
    // dying client may or may not have passed them to the server: a key it did not confirm is
    // refused (UNAVAILABLE), never written again (a resend typed keys twice under load).
    const second = keys.pid!;
    process.kill(second, 'SIGKILL');
    const racing = [keys.run(sendKeysCommands('run', 'raced-1 ')), keys.run(sendKeysCommands('run', 'raced-2 '))];
    expect(keys.pid).toBe(second); // the race happened: both were written before the exit was seen
    const outcomes = await Promise.allSettled(racing);
    for (const o of outcomes) if (o.status === 'rejected') expect(o.reason).toMatchObject({ code: 'UNAVAILABLE' });
    await until(() => keys.pid !== second, 'the dead client’s exit noticed');
    await type('end');
    expect(keys.started).toBe(3);

    const confirmed = outcomes.map((o, i) => (o.status === 'fulfilled' ? `raced-${i + 1} ` : null));
    await until(() => typed().toString('utf8').endsWith('end'), 'the keys after the crash');
    const text = typed().toString('utf8');
    // Each raced key at most once, in order; every confirmed one present; nothing else.
    expect(text).toMatch(/^before after-idle-kill (raced-1 )?(raced-2 )?end$/);
    for (const key of confirmed) if (key) expect(text).toContain(key);
    expect(sent).toEqual(['before ', 'after-idle-kill ', 'end']);
    expect(clientPids()).toEqual([keys.pid]);
  });

  it('reports what tmux refused as UNAVAILABLE, and goes on with the next keys', async () => {
    const keys = client();
    await expect(keys.run(sendKeysCommands('%99', 'x'))).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining("can't find pane") });
    await keys.run(sendKeysCommands('run', 'ok'));
    await until(() => typed().toString('utf8') === 'ok', 'the next keys');
  });

  it('fails the keys (UNAVAILABLE) once the server is gone, and leaves no client behind; close() ends it', async () => {
    const keys = client();
    await keys.run(sendKeysCommands('run', 'x'));
    execFileSync(TMUX, ['-S', socket, 'kill-server']);
    await until(() => keys.pid === null, 'the client to exit with its server');
    await expect(keys.run(sendKeysCommands('run', 'y'))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(clientPids()).toEqual([]);
    await keys.close();
    await expect(keys.run(sendKeysCommands('run', 'z'))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });
});

describe('TmuxRun input through its control client', () => {
  const harness = useRunHarness('handoff-keys-run-');

  it('uses one client for every keystroke and ends it with the run: no tmux client is left', async () => {
    const runId = randomUUID();
    let out = '';
    const run = await TmuxRun.start({
      runId,
      runsDir: harness.runsDir,
      command: { script: 'stty -echo; while IFS= read -r line; do printf "got[%s]\\n" "$line"; done' },
      cwd: null,
      env: { PATH: process.env.PATH, LANG: 'C.UTF-8' },
      cols: 100,
      rows: 30,
      tmuxBin: TMUX,
      onOutput: (t) => (out += t),
      logger,
    });
    harness.runs.push(run);
    const socket = join(run.dir, 'tmux.sock');
    expect(run.inputClientPid).toBeNull(); // started by the first keystroke only
    for (const word of ['one', 'dé;ux', 'trois']) await run.input(`${word}\r`);
    await until(() => out.includes('got[trois]'), 'the lines read by the run');
    expect(out).toContain('got[one]');
    expect(out).toContain('got[dé;ux]');
    const pid = run.inputClientPid!;
    expect(pgrep(`${socket} -C attach-session`)).toEqual([pid]);

    expect((await run.cancel()).cancelled).toBe(true);
    expect(pgrep(`${socket} -C attach-session`)).toEqual([]);
    await expect(run.input('late')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});
