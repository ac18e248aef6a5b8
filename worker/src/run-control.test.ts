import { ManualClock, type Clock } from '@handoff/shared';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { Command, ControlApply } from '@handoff/shared';
import type { PayloadOf } from './hub-link.js';
import { procfs, runProcesses, type ProcReader } from './process-tree.js';
import { RunControl, type RunControlOptions } from './run-control.js';
import { TmuxRun } from './tmux-run.js';
import { haltedNow, pgrep, tmuxServerAlive } from './testing/processes.js';
import { useRunHarness } from './testing/run-harness.js';
import { TMUX, tmuxQuery, until } from './testing/shares.js';

// Real tmux, real processes, real signals: a pause is checked where a user would check
// it — the state letters of the run's processes in /proc and the output that stops.

/** RunControl's hand-back plumbing, for tests that do not hand back (operator-shell.test.ts does). */
const noHandoff: Pick<RunControlOptions, 'scrollbackSeq' | 'deliverHandoff'> = {
  scrollbackSeq: () => 0,
  deliverHandoff: () => Promise.reject(new Error('no hand-back expected in this test')),
};

const harness = useRunHarness('handoff-control-');
const { runs, controls, marker } = harness;

/** /proc, counting the full scans (`list`) made through it. */
function countingProcfs(): { reader: ProcReader; scans: () => number } {
  let scans = 0;
  return {
    reader: { ...procfs, list: (opts) => ((scans += 1), procfs.list(opts)) },
    scans: () => scans,
  };
}

async function startControlled(command: Command, opts: { killGraceMs?: number; procs?: ProcReader; perlBin?: string | null; onApplied?: (r: PayloadOf<'control:applied'>) => Promise<void> | void; clock?: Clock } = {}) {
  const out = { text: '' };
  const run = await TmuxRun.start({
    runId: randomUUID(),
    runsDir: harness.runsDir,
    command,
    cwd: null,
    env: { PATH: process.env.PATH, LANG: 'C.UTF-8' },
    cols: 100,
    rows: 30,
    tmuxBin: TMUX,
    onOutput: (t) => (out.text += t),
    logger: pino({ level: 'silent' }),
    killGraceMs: opts.killGraceMs ?? 2000,
    ...(opts.perlBin !== undefined ? { perlBin: opts.perlBin } : {}),
  });
  runs.push(run);
  const applied: PayloadOf<'control:applied'>[] = [];
  const control = new RunControl({
    runId: run.runId,
    logger: pino({ level: 'silent' }),
    onApplied: (r) => {
      applied.push(r);
      return opts.onApplied?.(r);
    },
    procs: opts.procs,
    ...(opts.clock ? { clock: opts.clock } : {}),
    ...noHandoff,
  });
  controls.push(control);
  control.attach(run);
  const change = (seq: number, state: ControlApply['state'], mode: ControlApply['mode'] = null, softGraceMs = 10_000) =>
    control.apply({ runId: run.runId, seq, state, mode, softGraceMs, by: { id: 'op-1', name: 'Ada' }, handback: null });
  const appliedSeq = (seq: number) =>
    until(() => applied.some((a) => a.seq === seq), `control seq ${seq} applied`).then(() => applied.find((a) => a.seq === seq)!);
  return { run, out, control, applied, change, appliedSeq };
}

/**
 * State letters (/proc/<pid>/stat) of the run's processes — all but the pane's wrapper
 * shell, which only waits for the command and is left running (see `suspendRun`). A
 * process in uninterruptible wait (D) with SIGSTOP pending (/proc/<pid>/status) shows as
 * `D+SIGSTOP`: dash runs commands through vfork, and a parent whose child was stopped
 * before its exec waits in D — frozen too, it stops the moment that wait ends.
 */
async function states(run: TmuxRun): Promise<string[]> {
  const procs = (await runProcesses(run.pid)).filter((p) => p.pid !== run.pid);
  return procs.map((p) => {
    if (p.state !== 'D') return p.state;
    const status = readFileSync(`/proc/${p.pid}/status`, 'utf8');
    const pending = [...status.matchAll(/^(?:SigPnd|ShdPnd):\s*([0-9a-f]+)$/gm)].some((m) => (BigInt(`0x${m[1]}`) >> 18n) & 1n);
    return pending ? 'D+SIGSTOP' : 'D';
  });
}

/**
 * Every process of the run (but its wrapper) is stopped — within a moment of the report: a
 * child forked just as the group was signalled is stopped by the same group SIGSTOP but may
 * still show `R` until the kernel next schedules it, and one that left the group is stopped
 * by the sweep right after the report (see RunFreezer).
 */
async function expectStopped(run: TmuxRun): Promise<void> {
  const running = async () => (await states(run)).filter((s) => s !== 'T' && s !== 'D+SIGSTOP');
  const deadline = Date.now() + 1000;
  while ((await running()).length > 0 && Date.now() < deadline) await sleep(20);
  const all = await states(run);
  expect(all.length).toBeGreaterThanOrEqual(1);
  expect(await running()).toEqual([]);
}

/** Whether the output stays exactly as it is for `ms`. */
async function quiet(out: { text: string }, ms: number): Promise<boolean> {
  const before = out.text;
  await sleep(ms);
  return out.text === before;
}

const count = (text: string, word: string) => text.match(new RegExp(`${word} \\d+`, 'g'))?.length ?? 0;
const statusOf = (run: TmuxRun, option: string) => tmuxQuery(join(run.dir, 'tmux.sock'), ['show-options', '-A', '-t', 'run', '-v', option]);
/** The status line updates beside the control change (it does not hold up the report): wait for it. */
const statusShows = (run: TmuxRun, option: string, text: string) =>
  until(() => statusOf(run, option).includes(text), `${option} to show ${JSON.stringify(text)}`).then(() => statusOf(run, option));
const controlFile = (run: TmuxRun) => JSON.parse(readFileSync(run.controlPath, 'utf8'));

describe('RunControl', () => {
  it('hard pause stops every process of the run (state T) and the output; resume continues both', async () => {
    const { run, out, change, appliedSeq } = await startControlled({ script: 'i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.05; done' });
    await until(() => count(out.text, 'tick') >= 3, 'first ticks');

    expect(change(1, 'paused', 'hard')).toBe('accepted');
    const paused = await appliedSeq(1);
    expect(paused).toMatchObject({ runId: run.runId, seq: 1, effective: 'paused-hard' });
    expect(Math.abs(paused.appliedAt - Date.now())).toBeLessThan(5000);
    await expectStopped(run); // the loop's shell (and maybe its sleep)
    expect(await quiet(out, 600)).toBe(true);
    expect(controlFile(run)).toEqual({ seq: 1, state: 'paused', mode: 'hard', by: { id: 'op-1', name: 'Ada' } });
    // The banner is in the session's status line for attached viewers, never in the agent's output.
    await statusShows(run, 'status-left', 'PAUSED FOR OPERATOR (by Ada)');
    expect(statusOf(run, 'status')).toBe('on');
    expect(out.text).not.toContain('PAUSED');

    const ticks = count(out.text, 'tick');
    expect(change(2, 'agent')).toBe('accepted');
    expect(await appliedSeq(2)).toMatchObject({ seq: 2, effective: 'agent' });
    expect(await states(run)).not.toContain('T');
    await until(() => count(out.text, 'tick') >= ticks + 3, 'ticks after resume');
    expect(controlFile(run)).toEqual({ seq: 2, state: 'agent', mode: null });
    await statusShows(run, 'status', 'off');
  });

  it('hard pause stops the command’s process group and reports it without a full /proc scan; resume neither scans', async () => {
    const proc = countingProcfs();
    const scansAtReport = new Map<number, number>();
    const { run, out, change, appliedSeq } = await startControlled(
      { script: 'i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.05; done' },
      { procs: proc.reader, onApplied: (r) => void scansAtReport.set(r.seq, proc.scans()) },
    );
    await until(() => count(out.text, 'tick') >= 3, 'first ticks');
    // The command runs in a process group of its own, which owns the terminal; the wrapper keeps its own.
    const group = run.commandGroup()!;
    expect(group).toBeGreaterThan(1);
    expect(group).not.toBe(run.pid);
    expect(readFileSync(`/proc/${run.pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[5]).toBe(String(group)); // tpgid

    const before = proc.scans();
    change(1, 'paused', 'hard');
    expect(await appliedSeq(1)).toMatchObject({ effective: 'paused-hard' });
    expect(scansAtReport.get(1)).toBe(before); // none on the way to the report
    await expectStopped(run);
    expect(await quiet(out, 500)).toBe(true);

    const ticks = count(out.text, 'tick');
    const beforeResume = proc.scans(); // the sweep after the report is done by now
    change(2, 'agent');
    await appliedSeq(2);
    expect(scansAtReport.get(2)).toBe(beforeResume);
    await until(() => count(out.text, 'tick') >= ticks + 3, 'ticks after resume');
  });

  it('the status line and the full /proc scan after a pause or a resume wait for the hub to take the report, or for 100 ms on the worker’s clock', async () => {
    const proc = countingProcfs();
    const clock = new ManualClock();
    const taken: Array<() => void> = [];
    const { run, out, change, appliedSeq } = await startControlled(
      { script: 'i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.05; done' },
      { procs: proc.reader, clock, onApplied: () => new Promise<void>((resolve) => taken.push(resolve)) },
    );
    await until(() => count(out.text, 'tick') >= 3, 'first ticks');
    await sleep(200); // the scan made when the run was attached is over

    // Pause: reported with the run stopped, and nothing more until the hub takes the report.
    const before = proc.scans();
    change(1, 'paused', 'hard');
    expect(await appliedSeq(1)).toMatchObject({ effective: 'paused-hard' });
    await expectStopped(run);
    await sleep(300);
    expect(proc.scans()).toBe(before);
    expect(statusOf(run, 'status-left')).not.toContain('PAUSED');
    taken.shift()!();
    await until(() => proc.scans() >= before + 2, 'the sweep (two clean scans) once the report was taken');
    await statusShows(run, 'status-left', 'PAUSED FOR OPERATOR (by Ada)');

    // Resume, its report never taken (the hub is away): the line clears and the refresh scan
    // runs once the worker's clock passes 100 ms, not before.
    const ticks = count(out.text, 'tick');
    const beforeResume = proc.scans();
    change(2, 'agent');
    await appliedSeq(2);
    await until(() => count(out.text, 'tick') >= ticks + 3, 'ticks after resume');
    expect(proc.scans()).toBe(beforeResume);
    expect(statusOf(run, 'status')).toBe('on');
    clock.advance(99);
    await sleep(200);
    expect(proc.scans()).toBe(beforeResume);
    clock.advance(1);
    await until(() => proc.scans() === beforeResume + 1, 'the refresh after the resume, 100 ms on');
    await statusShows(run, 'status', 'off');

    // A pause overtaken by a resume before its report was taken: its line is never shown, and
    // its sweep never stops the resumed run.
    change(3, 'paused', 'hard');
    await appliedSeq(3);
    change(4, 'agent');
    await appliedSeq(4);
    // The hub takes the resume's report first, then the pause's (two reports in flight on two
    // nodes, say): the pause's late follow-up must not show its line over the resumed run.
    expect(taken).toHaveLength(3); // the second resume's, the pause's, the first resume's (never taken)
    taken.pop()!();
    taken.pop()!();
    const resumed = count(out.text, 'tick');
    await until(() => count(out.text, 'tick') >= resumed + 5, 'ticks after the second resume');
    expect(await states(run)).not.toContain('T');
    expect(statusOf(run, 'status')).toBe('off');
  });

  it('a process that left the run’s group (setsid) is stopped too and continued by the resume — once known, on the hot path', async () => {
    const proc = countingProcfs();
    const seen = new Map<number, { scans: number; sideHalted: boolean }>();
    let side = 0;
    const { run, out, change, appliedSeq } = await startControlled(
      { script: `setsid sh -c 'i=0; while :; do i=$((i+1)); echo "side $i"; sleep 0.05; done' & i=0; while :; do i=$((i+1)); echo "main $i"; sleep 0.05; done` },
      { procs: proc.reader, onApplied: (r) => void seen.set(r.seq, { scans: proc.scans(), sideHalted: side > 0 && haltedNow(side) }) },
    );
    await until(() => count(out.text, 'side') >= 3 && count(out.text, 'main') >= 3, 'both loops ticking');
    const outside = (await runProcesses(run.pid)).filter((p) => p.sid !== run.pid);
    expect(outside.length).toBeGreaterThanOrEqual(1); // the setsid'd shell (and maybe its sleep)
    side = outside.find((p) => p.pid === p.sid)!.pid;

    // Started after the last scan: the sweep that follows the report stops it.
    change(1, 'paused', 'hard');
    await appliedSeq(1);
    await until(async () => (await states(run)).every((st) => st === 'T' || st === 'D+SIGSTOP'), 'every process of the run stopped');
    expect(haltedNow(side)).toBe(true);
    await sleep(300); // what the side loop printed before the sweep stopped it is still on its way through tmux
    expect(await quiet(out, 500)).toBe(true);

    const sides = count(out.text, 'side');
    const mains = count(out.text, 'main');
    change(2, 'agent');
    await appliedSeq(2);
    await until(() => count(out.text, 'side') >= sides + 3 && count(out.text, 'main') >= mains + 3, 'both loops ticking again');

    // Known since the scan after the resume: stopped before the report, still without a scan.
    await sleep(300);
    const before = proc.scans();
    change(3, 'paused', 'hard');
    await appliedSeq(3);
    expect(seen.get(3)).toEqual({ scans: before, sideHalted: true });
    await expectStopped(run);
    change(4, 'agent');
    await appliedSeq(4);
    const again = count(out.text, 'side');
    await until(() => count(out.text, 'side') >= again + 2, 'the side loop continued');
  });

  it('without perl the command shares the wrapper’s group: the hard pause falls back to scanning /proc, and still stops it all', async () => {
    const proc = countingProcfs();
    const scansAtReport = new Map<number, number>();
    const { run, out, change, appliedSeq } = await startControlled(
      { script: 'i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.05; done' },
      { procs: proc.reader, perlBin: null, onApplied: (r) => void scansAtReport.set(r.seq, proc.scans()) },
    );
    await until(() => count(out.text, 'tick') >= 3, 'first ticks');
    expect(run.commandGroup()).toBeNull();
    const before = proc.scans();
    change(1, 'paused', 'hard');
    await appliedSeq(1);
    expect(scansAtReport.get(1)).toBeGreaterThanOrEqual(before + 2); // twice clean, as before
    await expectStopped(run);
    expect(await quiet(out, 400)).toBe(true);
    const ticks = count(out.text, 'tick');
    change(2, 'agent');
    await appliedSeq(2);
    await until(() => count(out.text, 'tick') >= ticks + 3, 'ticks after resume');
  });

  it('soft pause halts an agent at its next `handoff-agent checkpoint` (paused-soft); resume releases it', async () => {
    const { run, out, change, appliedSeq } = await startControlled({
      script: 'i=0; while [ $i -lt 2000 ]; do handoff-agent checkpoint || exit 9; i=$((i+1)); echo "step $i"; sleep 0.05; done',
    });
    await until(() => count(out.text, 'step') >= 3, 'agent stepping', 10_000);

    expect(change(1, 'paused', 'soft')).toBe('accepted');
    expect(await appliedSeq(1)).toMatchObject({ seq: 1, effective: 'paused-soft' });
    const steps = count(out.text, 'step');
    expect(await quiet(out, 800)).toBe(true);
    expect(count(out.text, 'step')).toBe(steps);
    // Halted by its own checkpoint, not by a signal: nothing is stopped.
    expect(await states(run)).not.toContain('T');
    const marker = JSON.parse(readFileSync(join(run.dir, 'checkpoint.json'), 'utf8'));
    expect(marker).toMatchObject({ seq: 1, pid: expect.any(Number), at: expect.any(String) });
    await statusShows(run, 'status-left', 'PAUSED FOR OPERATOR (by Ada)');

    expect(change(2, 'agent')).toBe('accepted');
    expect(await appliedSeq(2)).toMatchObject({ seq: 2, effective: 'agent' });
    await until(() => count(out.text, 'step') >= steps + 3, 'agent stepping again');
  });

  it('a soft pause escalates to a hard one when the agent never reaches a checkpoint', async () => {
    const { run, out, change, appliedSeq, applied } = await startControlled({ script: 'while :; do echo busy; sleep 0.05; done' });
    await until(() => out.text.includes('busy'), 'agent busy');
    const t0 = Date.now();
    change(1, 'paused', 'soft', 300);
    expect(await appliedSeq(1)).toMatchObject({ seq: 1, effective: 'paused-hard' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    await expectStopped(run);
    expect(await quiet(out, 500)).toBe(true);
    expect(applied.map((a) => a.effective)).toEqual(['paused-hard']);
  });

  it('the soft-pause grace runs on the worker’s clock: a 10-minute grace escalates when the clock passes it, not before', async () => {
    const clock = new ManualClock();
    const { run, out, change, appliedSeq, applied } = await startControlled({ script: 'while :; do echo busy; sleep 0.05; done' }, { clock });
    await until(() => out.text.includes('busy'), 'agent busy');
    change(1, 'paused', 'soft', 10 * 60_000);
    await new Promise((r) => setTimeout(r, 300));
    clock.advance(10 * 60_000 - 1);
    await new Promise((r) => setTimeout(r, 300));
    expect(applied).toEqual([]); // still waiting for a checkpoint, agent running
    expect(await quiet(out, 300)).toBe(false);
    clock.advance(1);
    expect(await appliedSeq(1)).toMatchObject({ seq: 1, effective: 'paused-hard', appliedAt: clock.now() });
    await expectStopped(run);
  });

  it('cancel while hard-paused ends the run at once by SIGTERM and leaves no process', async () => {
    const m = marker();
    const { run, change, appliedSeq } = await startControlled({ script: `sleep ${m} & sleep ${m}` }, { killGraceMs: 5000 });
    await until(() => pgrep(m).length === 3, 'the script and both sleeps'); // `sh -c` carries the marker too
    change(1, 'paused', 'hard');
    await appliedSeq(1);
    expect(pgrep(m).map((pid) => readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '')[0])).toEqual(['T', 'T', 'T']);

    const t0 = Date.now();
    // A stopped process holds SIGTERM until continued: without the SIGCONT this would take the 5 s grace and a SIGKILL.
    expect(await run.cancel()).toEqual({ exitCode: 143, cancelled: true });
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(pgrep(m)).toEqual([]);
    expect(tmuxServerAlive(join(run.dir, 'tmux.sock'))).toBe(false);
    expect(existsSync(run.dir)).toBe(false);
  });

  it('a closed control (the run is being cancelled) no longer escalates a pending soft pause', async () => {
    const { run, out, control, change, applied } = await startControlled({ script: 'while :; do echo busy; sleep 0.05; done' });
    await until(() => out.text.includes('busy'), 'agent busy');
    change(1, 'paused', 'soft', 200);
    await control.idle();
    control.close();
    await sleep(400);
    expect(applied).toEqual([]);
    expect(await states(run)).not.toContain('T');
    expect(change(2, 'agent')).toBe('closed');
  });

  it('is idempotent by seq: seq 3 then seq 2 leaves seq 3 in force', async () => {
    const { run, control, change, appliedSeq, applied } = await startControlled({ script: 'while :; do sleep 0.05; done' });
    expect(change(3, 'paused', 'hard')).toBe('accepted');
    await appliedSeq(3);
    expect(change(2, 'agent')).toBe('stale');
    expect(change(3, 'agent')).toBe('stale'); // a redelivery of seq 3, whatever it says
    await control.idle();
    await sleep(200);
    expect(control.seq).toBe(3);
    expect(controlFile(run)).toEqual({ seq: 3, state: 'paused', mode: 'hard', by: { id: 'op-1', name: 'Ada' } });
    await expectStopped(run);
    expect(applied.map((a) => [a.seq, a.effective])).toEqual([[3, 'paused-hard']]);
  });

  it('a hard takeover stops the run like a hard pause; a soft pause never lets a stopped run go on', async () => {
    const { run, change, appliedSeq } = await startControlled({ script: 'while :; do sleep 0.05; done' });
    change(1, 'operator', 'hard');
    expect(await appliedSeq(1)).toMatchObject({ effective: 'operator' });
    await expectStopped(run);
    await statusShows(run, 'status-left', 'OPERATOR Ada HAS CONTROL (agent paused)');
    expect(run.operatorShell).not.toBeNull();
    change(2, 'paused', 'soft', 10_000);
    expect(await appliedSeq(2)).toMatchObject({ effective: 'paused-hard' });
    await expectStopped(run);
    expect(run.operatorShell).toBeNull(); // a pause ends the takeover: the operator's shell closed
    await statusShows(run, 'status-left', 'PAUSED FOR OPERATOR (by Ada)');
    change(3, 'agent');
    await appliedSeq(3);
    expect(await states(run)).not.toContain('T');
  });

  it('takes changes before the run is attached and applies the newest once it is', async () => {
    const control = new RunControl({ runId: randomUUID(), logger: pino({ level: 'silent' }), onApplied: () => undefined, ...noHandoff });
    controls.push(control);
    const by = { id: 'op-1', name: 'Ada' };
    expect(control.apply({ runId: randomUUID(), seq: 1, state: 'paused', mode: 'hard', softGraceMs: 0, by, handback: null })).toBe('accepted');
    expect(control.apply({ runId: randomUUID(), seq: 2, state: 'agent', mode: null, softGraceMs: 0, by: null, handback: null })).toBe('accepted');
    expect(control.seq).toBe(2);
    const { run } = await startControlled({ script: 'while :; do sleep 0.05; done' });
    const reports: PayloadOf<'control:applied'>[] = [];
    const late = new RunControl({ runId: run.runId, logger: pino({ level: 'silent' }), onApplied: (r) => void reports.push(r), ...noHandoff });
    controls.push(late);
    late.apply({ runId: run.runId, seq: 1, state: 'paused', mode: 'hard', softGraceMs: 0, by, handback: null });
    late.apply({ runId: run.runId, seq: 2, state: 'paused', mode: 'hard', softGraceMs: 0, by: { id: 'op-2', name: 'Grace' }, handback: null });
    late.attach(run);
    await until(() => reports.length > 0, 'applied after attach');
    await late.idle();
    expect(reports.map((r) => [r.seq, r.effective])).toEqual([[2, 'paused-hard']]); // seq 1 was superseded before it took hold
    await statusShows(run, 'status-left', 'PAUSED FOR OPERATOR (by Grace)');
  });

  it('a run re-adopted while a previous worker’s hard pause holds it stopped is continued by a resume', async () => {
    const { run, control, change, appliedSeq, out } = await startControlled({ script: 'i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.05; done' });
    await until(() => count(out.text, 'tick') >= 3, 'first ticks');
    change(1, 'paused', 'hard');
    await appliedSeq(1);
    await expectStopped(run);
    // The worker dies: its control goes with it. The restarted worker's adopts the run.
    control.close();
    run.detach();
    const adopted = await TmuxRun.adopt({ runId: run.runId, runsDir: harness.runsDir, tmuxBin: TMUX, onOutput: (t) => (out.text += t), logger: pino({ level: 'silent' }) });
    runs.push(adopted);
    expect(await adopted.stopped()).toBe(true);
    const reports: PayloadOf<'control:applied'>[] = [];
    const fresh = new RunControl({ runId: run.runId, logger: pino({ level: 'silent' }), onApplied: (r) => void reports.push(r), ...noHandoff });
    controls.push(fresh);
    fresh.attach(adopted, await adopted.stopped());
    fresh.apply({ runId: run.runId, seq: 2, state: 'agent', mode: null, softGraceMs: 0, by: null, handback: null }); // the hub's resync
    await until(() => reports.some((r) => r.seq === 2), 'the resume applied');
    expect(await states(adopted)).not.toContain('T');
    const before = out.text.length;
    await until(() => out.text.length > before, 'ticks again after the resume');
  });
});
