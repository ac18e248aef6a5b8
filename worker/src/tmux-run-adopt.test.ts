import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Frame } from '@handoff/shared';
import { FrameBatcher } from './frame-batcher.js';
import { TmuxRun } from './tmux-run.js';
import { killMatching, pgrep, tmuxServerAlive } from './testing/processes.js';
import { TMUX, until } from './testing/shares.js';

// A pane is a terminal: its line discipline turns "\n" into "\r\n".
const lf = (s: string) => s.replaceAll('\r\n', '\n');
const silent = pino({ level: 'silent' });
const LAUNCH_AND_DIE = fileURLToPath(new URL('./testing/launch-and-die.ts', import.meta.url));

let runsDir: string;
const cleanups: Array<() => Promise<unknown> | unknown> = [];

beforeAll(async () => {
  runsDir = await mkdtemp(join(tmpdir(), 'handoff-adopt-'));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(async () => {
  await rm(runsDir, { recursive: true, force: true });
});

/**
 * What the worker does with a run's output: frames out of a FrameBatcher, each journaled
 * by the TmuxRun before it would be sent. `maxFrameChars` is small so frames end inside
 * one read of the output file (a resume position with `skip`).
 */
function pipeline(init: { initialSeq?: number; initialFrames?: Frame[] } = {}) {
  const frames: Frame[] = [...(init.initialFrames ?? [])];
  let run: TmuxRun | null = null;
  const batcher = new FrameBatcher({
    flushMs: 5,
    maxFrameChars: 700,
    ...init,
    onFrame: (frame, pushedThrough) => {
      run?.recordFrame(frame, pushedThrough);
      frames.push(frame);
    },
  });
  return {
    frames,
    batcher,
    /** A TmuxRun's output and creation hooks, as the worker's registry sets them (the run journals from its first frame). */
    hooks: {
      onOutput: (text: string) => batcher.push(text),
      onCreated: (r: TmuxRun) => (run = r),
    },
  };
}

function numbered(tag: string, count: number): string {
  // Multibyte characters on every line, so a resume position must respect UTF-8.
  return Array.from({ length: count }, (_, i) => `${tag} ${i + 1} ünï 😀\n`).join('');
}

describe('TmuxRun.adopt', () => {
  it('continues a live run left by a dead worker: journal frames + new output hold every line once, in order', async () => {
    const tag = `adopt-${randomUUID().slice(0, 8)}`;
    const runId = randomUUID();
    cleanups.push(() => killMatching(tag));
    const first = pipeline();
    const run1 = await TmuxRun.start({
      runId,
      runsDir,
      command: { script: `i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo "${tag} $i ünï 😀"; sleep 0.01; done` },
      cwd: null,
      env: { PATH: process.env.PATH, LANG: 'C.UTF-8' },
      cols: 120,
      rows: 32,
      tmuxBin: TMUX,
      ...first.hooks,
      logger: silent,
    });
    cleanups.push(() => TmuxRun.remove(runsDir, runId, TMUX));
    await until(() => first.frames.length >= 8, 'some frames', 10_000);

    const watchdog = join(run1.dir, 'watchdog.sh');
    const [watchdogPid] = pgrep(watchdog);
    expect(watchdogPid).toBeGreaterThan(1);
    // The worker dies: unsealed output is lost with it, the run goes on.
    run1.detach();
    first.batcher.dispose();
    const { last, frames } = await TmuxRun.journalTail(runsDir, runId, 1 << 20);
    expect(last).not.toBeNull();
    expect(frames.map((f) => f.data)).toEqual(first.frames.slice(0, frames.length).map((f) => f.data)); // byte-identical to what was "sent"
    expect(await TmuxRun.inspect(runsDir, runId, TMUX)).toBe('live');

    // The hub recorded all but the last two frames.
    const hubLastSeq = last!.seq - 2;
    const second = pipeline({ initialSeq: last!.seq, initialFrames: frames });
    second.batcher.ack(hubLastSeq);
    const run2 = await TmuxRun.adopt({ runId, runsDir, tmuxBin: TMUX, ...second.hooks, logger: silent, from: { offset: last!.offset, skip: last!.skip } });
    expect(pgrep(watchdog)).toEqual([watchdogPid]); // the run's watchdog outlived its worker and stays on
    expect(await run2.result).toEqual({ exitCode: 0, cancelled: false });
    second.batcher.flush();

    const hub = [...frames.filter((f) => f.seq <= hubLastSeq), ...second.batcher.unacked()];
    expect(hub.map((f) => f.seq)).toEqual(Array.from({ length: hub.length }, (_, i) => i + 1)); // gapless from 1
    expect(lf(hub.map((f) => f.data).join(''))).toBe(numbered(tag, 300));
    expect(tmuxServerAlive(join(run2.dir, 'tmux.sock'))).toBe(false);
    expect(existsSync(run2.dir)).toBe(false);
    expect(pgrep(join(run2.dir, 'watchdog.sh'))).toEqual([]);
  });

  it('a re-adopted run whose watchdog died gets a new one', async () => {
    const runId = randomUUID();
    const tag = `wd-${randomUUID().slice(0, 8)}`;
    cleanups.push(() => killMatching(tag));
    const run1 = await TmuxRun.start({
      runId,
      runsDir,
      command: { script: `sleep 1000.${Date.now() % 90000 + 10000}; : ${tag}` },
      cwd: null,
      env: { PATH: process.env.PATH },
      cols: 80,
      rows: 24,
      tmuxBin: TMUX,
      onOutput: () => undefined,
      logger: silent,
    });
    cleanups.push(() => TmuxRun.remove(runsDir, runId, TMUX));
    const watchdog = join(run1.dir, 'watchdog.sh');
    const [old] = pgrep(watchdog);
    run1.detach();
    process.kill(-old!, 'SIGKILL');
    await until(() => pgrep(watchdog).length === 0, 'the watchdog to die');
    const run2 = await TmuxRun.adopt({ runId, runsDir, tmuxBin: TMUX, onOutput: () => undefined, logger: silent });
    const fresh = pgrep(watchdog);
    expect(fresh).toHaveLength(1);
    expect(fresh[0]).not.toBe(old);
    await run2.cancel();
    expect(pgrep(watchdog)).toEqual([]);
    expect(pgrep(tag)).toEqual([]);
  });

  it('a run that ended while no worker watched delivers the rest of its output and its real exit status', async () => {
    const tag = `ended-${randomUUID().slice(0, 8)}`;
    const runId = randomUUID();
    const first = pipeline();
    const run1 = await TmuxRun.start({
      runId,
      runsDir,
      command: { script: `echo "${tag} 1 ünï 😀"; sleep 0.5; i=1; while [ $i -lt 2000 ]; do i=$((i+1)); echo "${tag} $i ünï 😀"; done; exit 7` },
      cwd: null,
      env: { PATH: process.env.PATH, LANG: 'C.UTF-8' },
      cols: 120,
      rows: 32,
      tmuxBin: TMUX,
      ...first.hooks,
      logger: silent,
    });
    cleanups.push(() => TmuxRun.remove(runsDir, runId, TMUX));
    await until(() => first.frames.length >= 1, 'the first frame');
    run1.detach();
    first.batcher.dispose();
    const socket = join(run1.dir, 'tmux.sock');
    await until(() => !tmuxServerAlive(socket), 'the run to end on its own', 10_000);
    expect(await TmuxRun.inspect(runsDir, runId, TMUX)).toBe('ended');
    // Its watchdog left with the tmux server.
    await until(() => pgrep(join(run1.dir, 'watchdog.sh')).length === 0, 'the watchdog to exit', 3000);

    const { last, frames } = await TmuxRun.journalTail(runsDir, runId, 1 << 20);
    const second = pipeline({ initialSeq: last!.seq, initialFrames: frames });
    second.batcher.ack(last!.seq);
    const run2 = await TmuxRun.adopt({ runId, runsDir, tmuxBin: TMUX, ...second.hooks, logger: silent, from: { offset: last!.offset, skip: last!.skip } });
    expect(await run2.result).toEqual({ exitCode: 7, cancelled: false });
    second.batcher.flush();
    const all = [...frames, ...second.batcher.unacked()];
    expect(all.map((f) => f.seq)).toEqual(Array.from({ length: all.length }, (_, i) => i + 1));
    expect(lf(all.map((f) => f.data).join(''))).toBe(numbered(tag, 2000));
    expect(existsSync(run2.dir)).toBe(false);
  });

  it('retainDir keeps an ended run adoptable until release(): a worker that died before the hub had the exit still reports it', async () => {
    const runId = randomUUID();
    const first = pipeline();
    const run1 = await TmuxRun.start({
      runId,
      runsDir,
      command: { script: 'echo "last words ✓"; exit 5' },
      cwd: null,
      env: { PATH: process.env.PATH, LANG: 'C.UTF-8' },
      cols: 80,
      rows: 24,
      tmuxBin: TMUX,
      ...first.hooks,
      logger: silent,
      retainDir: true,
    });
    cleanups.push(() => TmuxRun.remove(runsDir, runId, TMUX));
    expect(await run1.result).toEqual({ exitCode: 5, cancelled: false });
    // The worker dies before the final frame was sealed and the exit reported.
    first.batcher.dispose();
    expect(existsSync(run1.dir)).toBe(true);
    expect(await TmuxRun.inspect(runsDir, runId, TMUX)).toBe('ended');

    const { last, frames } = await TmuxRun.journalTail(runsDir, runId, 1 << 20);
    const from = last ? { offset: last.offset, skip: last.skip } : undefined;
    const second = pipeline({ initialSeq: last?.seq ?? 0, initialFrames: frames });
    const run2 = await TmuxRun.adopt({ runId, runsDir, tmuxBin: TMUX, ...second.hooks, logger: silent, retainDir: true, from });
    expect(await run2.result).toEqual({ exitCode: 5, cancelled: false });
    second.batcher.flush();
    expect(lf(second.frames.map((f) => f.data).join(''))).toBe('last words ✓\n');
    expect((await TmuxRun.journalTail(runsDir, runId, 1 << 20)).last?.seq).toBe(second.frames.at(-1)!.seq); // journaled until released
    await run2.release();
    expect(existsSync(run2.dir)).toBe(false);
  });

  it('a worker that died after reporting the start, before letting the command go: the adopter lets it go', async () => {
    const tag = `pre-go-${randomUUID().slice(0, 8)}`;
    const runId = randomUUID();
    cleanups.push(() => killMatching(tag));
    cleanups.push(() => TmuxRun.remove(runsDir, runId, TMUX));
    // A real process, SIGKILLed at the moment it reports the start (see testing/launch-and-die.ts).
    const died = spawn(process.execPath, ['--import', 'tsx', LAUNCH_AND_DIE, TMUX, runsDir, runId, `echo "${tag} ran"; sleep 0.2`], { stdio: 'ignore' });
    const [, signal] = await once(died, 'exit');
    expect(signal).toBe('SIGKILL');
    expect(await TmuxRun.inspect(runsDir, runId, TMUX)).toBe('live');
    // Its command is still waiting for `go`: nothing ran.
    await new Promise((r) => setTimeout(r, 300));
    expect(await readFile(join(runsDir, runId, 'output.log'), 'utf8')).toBe('');

    const second = pipeline();
    const run2 = await TmuxRun.adopt({ runId, runsDir, tmuxBin: TMUX, ...second.hooks, logger: silent });
    cleanups.push(() => run2.release());
    expect(await run2.result).toMatchObject({ exitCode: 0 });
    await until(() => second.frames.map((f) => f.data).join('').includes(`${tag} ran`), 'the command ran', 5000);
    expect(lf(second.frames.map((f) => f.data).join(''))).toBe(`${tag} ran\n`);
  });
});
