import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Command } from '@handoff/shared';
import { groupLauncher, shellQuote } from './run-script.js';
import { TmuxRun, type TmuxRunOptions } from './tmux-run.js';
import { killMatching, pgrep, tmuxFormatRunning, tmuxServerAlive, uniqueSleep } from './testing/processes.js';

// These tests drive the real tmux. A pane is a terminal, so its line discipline turns
// every "\n" the program writes into "\r\n"; comparisons undo exactly that and nothing else.
const lf = (s: string) => s.replaceAll('\r\n', '\n');

let runsDir: string;
const started: TmuxRun[] = [];
const markers: string[] = [];

beforeAll(async () => {
  runsDir = await mkdtemp(join(tmpdir(), 'handoff-tmux-run-'));
});
afterEach(async () => {
  await Promise.all(started.splice(0).map((r) => r.cancel()));
  for (const m of markers.splice(0)) killMatching(m);
});
afterAll(async () => {
  await rm(runsDir, { recursive: true, force: true });
});

async function start(command: Command, opts: Partial<TmuxRunOptions> = {}) {
  const out = { text: '' };
  const run = await TmuxRun.start({
    runId: randomUUID(),
    runsDir,
    command,
    cwd: null,
    env: { PATH: process.env.PATH, LANG: 'C.UTF-8' },
    cols: 120,
    rows: 32,
    tmuxBin: '/usr/bin/tmux',
    onOutput: (t) => (out.text += t),
    logger: pino({ level: 'silent' }),
    ...opts,
  });
  started.push(run);
  return { run, out };
}

function marker(): string {
  const m = uniqueSleep();
  markers.push(m);
  return m;
}

describe('TmuxRun', () => {
  it('reports the pane as tmux created it, even once a quick command is gone', async () => {
    const { run } = await start({ script: 'true' }, { cols: 90, rows: 25 });
    await run.result;
    expect(await run.paneInfo()).toEqual({ cols: 90, rows: 25, term: 'screen-256color', shell: '/bin/sh' });
  });

  it('delivers exactly what the script printed and its exit code', async () => {
    const { run, out } = await start({ script: "printf 'line %s\\n' 1 2 3; echo 'ünïcødé ✓ 😀'; printf 'no newline'" });
    expect(await run.result).toEqual({ exitCode: 0, cancelled: false });
    expect(lf(out.text)).toBe('line 1\nline 2\nline 3\nünïcødé ✓ 😀\nno newline');
  });

  it('records a non-zero exit code, and 128+N for a command killed by signal N', async () => {
    const three = await start({ script: 'echo failing; exit 3' });
    expect(await three.run.result).toEqual({ exitCode: 3, cancelled: false });
    const killed = await start({ script: 'kill -9 $$' });
    expect((await killed.run.result).exitCode).toBe(137);
  });

  it('execs argv without any shell interpretation', async () => {
    const { run, out } = await start({ argv: ['printf', '[%s]\\n', 'a b', "it's", '$HOME', '*', '`id`', ';exit 4'] });
    expect(await run.result).toEqual({ exitCode: 0, cancelled: false });
    expect(lf(out.text)).toBe("[a b]\n[it's]\n[$HOME]\n[*]\n[`id`]\n[;exit 4]\n");
    const builtin = await start({ argv: ['exit', '5'] }); // no builtins: `exit` is looked up on PATH
    expect((await builtin.run.result).exitCode).toBe(127);
  });

  it('never splits a multibyte character, even when its bytes arrive apart', async () => {
    const { run, out } = await start({ script: "printf '\\360\\237'; sleep 0.3; printf '\\230\\200 done\\n'" });
    await run.result;
    expect(lf(out.text)).toBe('😀 done\n');
  });

  it('streams output while the command runs', async () => {
    const { run, out } = await start({ script: 'echo first; sleep 2; echo second' });
    await sleep(1000);
    expect(lf(out.text)).toBe('first\n');
    await run.result;
    expect(lf(out.text)).toBe('first\nsecond\n');
  });

  it('loses nothing at the end of a large, fast output', async () => {
    const { run, out } = await start({ argv: ['seq', '1', '50000'] });
    expect((await run.result).exitCode).toBe(0);
    const expected = Array.from({ length: 50_000 }, (_, i) => `${i + 1}\n`).join('');
    expect(lf(out.text)).toBe(expected);
  });

  it('delivers a 1 MB line whole, through the capture file, before the result', async () => {
    const { run, out } = await start({ script: "head -c 1048576 /dev/zero | tr '\\0' 'x'; printf '\\n€%.0s' 1 2 3 4 5; echo" });
    expect((await run.result).exitCode).toBe(0);
    expect(lf(out.text)).toBe(`${'x'.repeat(1_048_576)}\n€\n€\n€\n€\n€\n`);
  });

  it('records the pane output in an append-only file and journals frames with the position after them', async () => {
    const { run } = await start({ script: 'echo one; sleep 0.3; echo two; sleep 5' });
    const { readFile } = await import('node:fs/promises');
    await sleep(600);
    expect(lf(await readFile(join(run.dir, 'output.log'), 'utf8'))).toBe('one\ntwo\n');
    run.recordFrame({ seq: 1, t: 0, data: 'one\r\n' }, 5);
    const tail = await TmuxRun.journalTail(runsDir, run.runId, 1000);
    expect(tail.last).toEqual({ seq: 1, t: 0, data: 'one\r\n', offset: 5, skip: 0 });
  });

  it('hands the run out before reading its output, and reports the launch before the command is let go', async () => {
    const events: string[] = [];
    let created: TmuxRun | null = null;
    const { run } = await start({ script: 'echo first-line' }, {
      onCreated: (r) => {
        created = r;
        events.push('created');
      },
      onLaunched: (pane) => events.push(`launched ${pane?.cols}x${pane?.rows} ${pane?.term}`),
      onOutput: (t) => events.push(`output ${lf(t)}`),
    });
    events.push('started');
    expect(created).toBe(run);
    await run.result;
    // The launch is reported before any output (the registry reports the run's start then);
    // the output may come before or after `start` resolved, which is why the run is handed out at once.
    expect(events.slice(0, 2)).toEqual(['created', 'launched 120x32 screen-256color']);
    expect(events.filter((e) => e.startsWith('output')).join('')).toBe('output first-line\n');
  });

  it('handles a command that ends at once', async () => {
    const { run, out } = await start({ argv: ['true'] });
    expect(await run.result).toEqual({ exitCode: 0, cancelled: false });
    expect(out.text).toBe('');
  });

  it('runs in cwd, with the run environment plus HANDOFF_RUN_ID and HANDOFF_INBOX', async () => {
    const cwd = await mkdtemp(join(tmpdir(), 'handoff-cwd-'));
    try {
      const { run, out } = await start(
        { script: 'pwd; echo "$FOO|$HANDOFF_RUN_ID|$HANDOFF_INBOX"; test -f "$HANDOFF_INBOX" && echo inbox-exists' },
        { cwd, env: { PATH: process.env.PATH, FOO: 'bar baz' } },
      );
      const inbox = run.inboxPath;
      expect((await run.result).exitCode).toBe(0);
      expect(lf(out.text)).toBe(`${cwd}\nbar baz|${run.runId}|${inbox}\ninbox-exists\n`);
      expect(inbox).toBe(join(runsDir, run.runId, 'inbox.jsonl'));
    } finally {
      await rm(cwd, { recursive: true, force: true });
    }
  });

  it('gives the agent its outbox, its control file and the `handoff-agent` CLI first on PATH', async () => {
    const { run, out } = await start(
      { script: 'echo "$HANDOFF_OUTBOX|$HANDOFF_CONTROL"; test -f "$HANDOFF_OUTBOX" && echo outbox-exists; command -v handoff-agent; handoff-agent checkpoint && echo not-paused' },
      { env: { PATH: '/usr/bin:/bin' } },
    );
    const outbox = run.outboxPath;
    expect((await run.result).exitCode).toBe(0);
    expect(lf(out.text)).toBe(`${outbox}|${run.controlPath}\noutbox-exists\n${join(run.dir, 'bin', 'handoff-agent')}\nnot-paused\n`);
    expect(outbox).toBe(join(runsDir, run.runId, 'outbox.jsonl'));
    expect(run.controlPath).toBe(join(runsDir, run.runId, 'control.json'));
  });

  it('starts the pane in cwd, before its command runs; a cwd that is a tmux format (`#(…)` runs a command) is taken literally', async () => {
    const base = await realpath(await mkdtemp(join(tmpdir(), 'handoff-cwd-'))); // as tmux reports it
    const ran = join(base, 'ran');
    try {
      for (const name of [tmuxFormatRunning(ran), 'a #{pane_id} ## b;']) {
        const cwd = join(base, name);
        await mkdir(cwd);
        const runId = randomUUID();
        // Asked of tmux once the pane exists, while its command does not run yet (it waits for `go`).
        let atLaunch = '';
        const { run, out } = await start({ script: 'pwd' }, {
          runId,
          cwd,
          onLaunched: () => {
            atLaunch = execFileSync('/usr/bin/tmux', ['-S', join(runsDir, runId, 'tmux.sock'), 'display-message', '-p', '-t', 'run', '#{pane_current_path}'], { encoding: 'utf8' });
          },
        });
        expect((await run.result).exitCode).toBe(0);
        expect(atLaunch).toBe(`${cwd}\n`);
        expect(lf(out.text)).toBe(`${cwd}\n`);
      }
      expect(existsSync(ran)).toBe(false);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });

  it('fails clearly, without an exit code, when cwd does not exist', async () => {
    const { run, out } = await start({ argv: ['echo', 'unreachable'] }, { cwd: '/nonexistent/handoff-dir' });
    const outcome = await run.result;
    expect(outcome.exitCode).toBeNull();
    expect(outcome.error).toBe('handoff: working directory /nonexistent/handoff-dir does not exist or is not accessible');
    expect(lf(out.text)).toBe(`${outcome.error}\n`);
  });

  it('removes its tmux server and run directory when the run ends', async () => {
    const { run } = await start({ script: 'sleep 0.5; echo bye' });
    const socket = join(run.dir, 'tmux.sock');
    expect(tmuxServerAlive(socket)).toBe(true);
    await run.result;
    expect(tmuxServerAlive(socket)).toBe(false);
    expect(existsSync(run.dir)).toBe(false);
  });

  it('cancel kills the whole tree, background jobs included, and leaves nothing behind', async () => {
    const m = marker();
    const { run } = await start({ argv: ['sh', '-c', `sleep ${m} & sleep ${m}`] });
    await sleep(300);
    expect(pgrep(m)).toHaveLength(3); // the `sh -c` (its command line holds the marker too) and both sleeps
    const outcome = await run.cancel();
    expect(outcome).toEqual({ exitCode: 143, cancelled: true });
    expect(pgrep(m)).toEqual([]);
    expect(tmuxServerAlive(join(run.dir, 'tmux.sock'))).toBe(false);
    expect(existsSync(run.dir)).toBe(false);
  });

  it('cancel escalates to SIGKILL when the run ignores SIGTERM (and SIGHUP)', async () => {
    const m = marker();
    const { run } = await start({ script: `trap '' TERM HUP; sleep ${m} & sleep ${m}` }, { killGraceMs: 300 });
    await sleep(300);
    expect(pgrep(m)).toHaveLength(3);
    const t0 = Date.now();
    expect(await run.cancel()).toEqual({ exitCode: 137, cancelled: true });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    expect(pgrep(m)).toEqual([]);
  });

  it('a run that exits leaves no background process behind, even a nohup one', async () => {
    const m = marker();
    const { run, out } = await start({ script: `nohup sleep ${m} >/dev/null 2>&1 & sleep ${m} & echo spawned` });
    expect(await run.result).toEqual({ exitCode: 0, cancelled: false });
    expect(lf(out.text)).toBe('spawned\n');
    expect(pgrep(m)).toEqual([]);
  });

  // A process group of its own that owns the pane's terminal, with Ctrl-Z off (see groupLauncher):
  // stty and ps answer from inside the command, so a wrong ioctl number fails here.
  const GROUP_PROBE = `stty -a | grep -o 'susp = [^;]*'; ps -o pid=,pgid=,tpgid= -p $$`;
  const groupOf = (text: string) => {
    const [pid, pgid, tpgid] = lf(text).split('\n')[1]!.trim().split(/\s+/).map(Number);
    return { pid, pgid, tpgid };
  };

  it('runs the command in a process group of its own that owns the terminal, with the suspend character off', async () => {
    const { run, out } = await start({ script: GROUP_PROBE });
    expect(await run.result).toEqual({ exitCode: 0, cancelled: false });
    expect(lf(out.text).split('\n')[0]).toBe('susp = <undef>');
    const { pid, pgid, tpgid } = groupOf(out.text);
    expect(pid).toBeGreaterThan(1);
    expect(pgid).toBe(pid);
    expect(tpgid).toBe(pid);
  });

  it('does the same through the POSIX module where the ioctl numbers are not the generic ones', async () => {
    // The launcher an architecture like ppc64 gets, run by this machine's perl in a real tmux pane.
    const dir = await mkdtemp(join(runsDir, 'posix-'));
    const socket = join(dir, 'tmux.sock');
    const script = join(dir, 'probe.sh');
    await writeFile(script, `${['perl', '-e', groupLauncher('ppc64'), '--', join(dir, 'group'), 'sh', '-c', GROUP_PROBE].map(shellQuote).join(' ')} > ${shellQuote(join(dir, 'out'))} 2>&1\n`);
    try {
      execFileSync('/usr/bin/tmux', ['-S', socket, '-f', '/dev/null', 'new-session', '-d', '-x', '80', '-y', '24', 'sh', script]);
      let text = '';
      for (let i = 0; i < 200 && !text.includes('\n', text.indexOf('\n') + 1); i++) {
        await sleep(25);
        text = await readFile(join(dir, 'out'), 'utf8').catch(() => '');
      }
      expect(text.split('\n')[0]).toBe('susp = <undef>');
      const { pid, pgid, tpgid } = groupOf(text);
      expect(pgid).toBe(pid);
      expect(tpgid).toBe(pid);
      expect((await readFile(join(dir, 'group'), 'utf8')).trim()).toBe(String(pid));
    } finally {
      spawnSync('/usr/bin/tmux', ['-S', socket, 'kill-server'], { stdio: 'ignore' }); // gone already once the probe ended
    }
  });

  it('rejects an unsafe run id without creating anything', async () => {
    await mkdir(runsDir, { recursive: true });
    await expect(TmuxRun.start({
      runId: '../escape',
      runsDir,
      command: { argv: ['true'] },
      cwd: null,
      env: {},
      cols: 80,
      rows: 24,
      tmuxBin: '/usr/bin/tmux',
      onOutput: () => undefined,
      logger: pino({ level: 'silent' }),
    })).rejects.toThrow(/not a safe directory name/);
  });
});
