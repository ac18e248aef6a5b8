import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { messageFlash } from './run-inbox.js';
import { statusText } from './status-line.js';
import { TmuxRun } from './tmux-run.js';
import { TMUX, tmuxQuery, until } from './testing/shares.js';

let runsDir: string;
const runs: TmuxRun[] = [];

beforeAll(async () => {
  runsDir = await mkdtemp(join(tmpdir(), 'handoff-status-'));
});
afterEach(async () => {
  await Promise.all(runs.splice(0).map((r) => r.cancel()));
});
afterAll(async () => {
  await rm(runsDir, { recursive: true, force: true });
});

describe('status line text', () => {
  it('escapes everything tmux would expand: formats, styles, shell commands, strftime', () => {
    expect(statusText('#(touch /tmp/pwned) #{pane_pid} #[fg=red] 100% %H')).toBe('##(touch /tmp/pwned) ##{pane_pid} ##[fg=red] 100%% %%H');
  });

  it('is one line without control characters, and bounded', () => {
    expect(statusText('a\nb\r\tc\u001b[31md\u2028e')).toBe('a b c [31md e');
    const long = statusText('x'.repeat(500));
    expect(Array.from(long)).toHaveLength(160);
    expect(long.endsWith('…')).toBe(true);
  });

  it('a message shows as `✉ <actor>: <first 80 characters>`', () => {
    expect(messageFlash('alice', 'please\nlook at   the tests')).toBe('✉ alice: please look at the tests');
    const flash = messageFlash('bob', '😀'.repeat(100));
    expect(flash).toBe(`✉ bob: ${'😀'.repeat(80)}…`); // by character: no emoji is cut in half
  });
});

describe('StatusLine on a real run', () => {
  it('shows a banner until cleared and a message for a while, never in the pane output, without resizing the pane', async () => {
    const out = { text: '' };
    const run = await TmuxRun.start({
      runId: randomUUID(),
      runsDir,
      command: { script: 'while :; do sleep 0.1; done' },
      cwd: null,
      env: { PATH: process.env.PATH },
      cols: 90,
      rows: 25,
      tmuxBin: TMUX,
      onOutput: (t) => (out.text += t),
      logger: pino({ level: 'silent' }),
      messageFlashMs: 300,
    });
    runs.push(run);
    const socket = join(run.dir, 'tmux.sock');
    const option = (name: string) => tmuxQuery(socket, ['show-options', '-A', '-t', 'run', '-v', name]);
    const paneSize = () => tmuxQuery(socket, ['display-message', '-p', '-t', 'run', '#{pane_width}x#{pane_height}']);
    expect(option('status')).toBe('off');

    await run.status.setBanner('PAUSED FOR OPERATOR (by #(id) 50%)');
    expect(option('status')).toBe('on');
    expect(option('status-left')).toContain('PAUSED FOR OPERATOR (by ##(id) 50%%)');
    expect(paneSize()).toBe('90x25');

    await run.status.flash(messageFlash('alice', 'check the logs; then go on;'));
    expect(option('status-right')).toContain('✉ alice: check the logs; then go on;');
    await until(() => option('status-right') === '', 'the message to go after flashMs');
    expect(option('status')).toBe('on'); // the banner is still up

    await run.status.setBanner(null);
    expect(option('status')).toBe('off');
    expect(paneSize()).toBe('90x25');
    expect(out.text).toBe('');
  });
});
