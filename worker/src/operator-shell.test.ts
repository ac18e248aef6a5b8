import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, realpath, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { handoffContextSchema, type Command, type ControlApply } from '@handoff/shared';
import type { PayloadOf } from './hub-link.js';
import { operatorShellProcesses } from './operator-shell.js';
import { runProcesses } from './process-tree.js';
import { RunControl } from './run-control.js';
import { RunInbox } from './run-inbox.js';
import { TmuxRun, type TmuxRunOptions } from './tmux-run.js';
import { haltedNow, pgrep, tmuxFormatRunning, tmuxServerAlive } from './testing/processes.js';
import { useRunHarness } from './testing/run-harness.js';
import { TMUX, tmuxQuery, until } from './testing/shares.js';

// Takeover and hand-back against real tmux, bash and signals: what the operator types
// goes through `TmuxRun.input` (what `term:input` calls) and is checked where a viewer
// would see it — in the run's captured output — and the agent's state in /proc.

const harness = useRunHarness('handoff-operator-');
const { runs, controls, marker } = harness;

const ADA = { id: 'op-1', name: 'Ada' };
const TICKS = 'i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.05; done';

async function startTakeover(command: Command, opts: Partial<TmuxRunOptions> = {}) {
  const out = { text: '' };
  const run = await TmuxRun.start({
    runId: randomUUID(),
    runsDir: harness.runsDir,
    command,
    cwd: null,
    env: { PATH: process.env.PATH, LANG: 'C.UTF-8', HOME: process.env.HOME, FOO: 'from the run' },
    cols: 100,
    rows: 30,
    tmuxBin: TMUX,
    onOutput: (t) => (out.text += t),
    logger: pino({ level: 'silent' }),
    killGraceMs: 1000,
    ...opts,
  });
  runs.push(run);
  const inbox = new RunInbox({ dir: run.dir, logger: pino({ level: 'silent' }) });
  const applied: PayloadOf<'control:applied'>[] = [];
  let frameSeq = 0;
  const control = new RunControl({
    runId: run.runId,
    logger: pino({ level: 'silent' }),
    onApplied: (r) => void applied.push(r),
    scrollbackSeq: () => (frameSeq += 1),
    deliverHandoff: (seq, packet) => inbox.deliverHandoff(seq, packet),
  });
  controls.push(control);
  control.attach(run);
  const change = (c: Partial<ControlApply> & Pick<ControlApply, 'seq' | 'state'>) =>
    control.apply({ runId: run.runId, mode: null, softGraceMs: 10_000, by: ADA, handback: null, ...c });
  const appliedSeq = (seq: number) =>
    until(() => applied.some((a) => a.seq === seq), `control seq ${seq} applied`, 8000).then(() => applied.find((a) => a.seq === seq)!);
  /** Types a command line into the terminal and waits for its output (`$((…))` keeps the echoed line from matching). */
  const type = async (line: string, expect: string) => {
    const from = out.text.length;
    await run.input(`${line}\r`);
    await until(() => out.text.slice(from).includes(expect), `output ${JSON.stringify(expect)}`);
  };
  return { run, out, control, applied, change, appliedSeq, type, inbox };
}

const socketOf = (run: TmuxRun) => join(run.dir, 'tmux.sock');
const windowNames = (run: TmuxRun) => tmuxQuery(socketOf(run), ['list-windows', '-t', 'run', '-F', '#{window_name}']).split('\n');
const shownWindow = (run: TmuxRun) => tmuxQuery(socketOf(run), ['display-message', '-p', '-t', 'run', '#{window_name}']);
const statusLeft = (run: TmuxRun) => tmuxQuery(socketOf(run), ['show-options', '-A', '-t', 'run', '-v', 'status-left']);
const stateOf = (pid: number) => readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '')[0];
const inboxLines = (run: TmuxRun) => readFileSync(run.inboxPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const count = (text: string, word: string) => text.match(new RegExp(`${word} \\d+`, 'g'))?.length ?? 0;

/** The agent's processes (all but the pane's wrapper, which a pause leaves running) are all stopped. */
async function agentStopped(run: TmuxRun): Promise<boolean> {
  const procs = (await runProcesses(run.pid)).filter((p) => p.pid !== run.pid);
  return procs.length > 0 && procs.every((p) => p.state === 'T');
}

/**
 * The agent's processes are all stopped or about to (SIGSTOP pending): what a hard pause's
 * report promises. A loaded machine may not have scheduled a member of the stopped group
 * since the signal, so it still shows its old state — yet it runs none of its own code.
 */
async function agentHalted(run: TmuxRun): Promise<boolean> {
  const procs = (await runProcesses(run.pid)).filter((p) => p.pid !== run.pid);
  return procs.length > 0 && procs.every((p) => haltedNow(p.pid));
}

describe('takeover', () => {
  it('opens the operator shell for the taker, halts the agent hard, and the operator works while the agent stays stopped', async () => {
    const { run, out, change, appliedSeq, type } = await startTakeover({ script: TICKS });
    await until(() => count(out.text, 'tick') >= 3, 'agent ticking');

    change({ seq: 1, state: 'operator', mode: 'hard' });
    expect(await appliedSeq(1)).toMatchObject({ seq: 1, effective: 'operator' });
    expect(await agentHalted(run)).toBe(true);
    const shell = run.operatorShell!;
    expect(shell).not.toBeNull();
    expect(windowNames(run)).toHaveLength(2);
    expect(windowNames(run)).toContain('operator');
    expect(shownWindow(run)).toBe('operator'); // selected: a tmate/upterm client sees it too
    await until(() => statusLeft(run).includes('OPERATOR Ada HAS CONTROL (agent paused)'), 'operator banner in the status line');
    // The shell's banner is in the run's output (dashboards, recording).
    await until(() => out.text.includes('── Ada took over this run; the agent is paused. Hand back from the dashboard. ──'), 'takeover banner');

    const ticks = count(out.text, 'tick');
    await type('echo "op-$((6*7))"; echo "$FOO|$HANDOFF_RUN_ID"; command -v handoff-agent; pwd', 'op-42');
    await until(() => out.text.includes(`from the run|${run.runId}`), 'the run’s environment in the shell');
    expect(out.text).toContain(join(run.dir, 'bin', 'handoff-agent')); // the run's bin first on PATH
    // A hard pause never stops the operator's shell: it is not one of the run's processes.
    expect(stateOf(shell.pid)).not.toBe('T');
    expect((await runProcesses(run.pid)).map((p) => p.pid)).not.toContain(shell.pid);
    expect(await agentStopped(run)).toBe(true);
    expect(count(out.text, 'tick')).toBe(ticks);
  });

  it('a soft takeover waits for the agent’s checkpoint, with the shell open at once', async () => {
    const { run, out, change, appliedSeq, applied } = await startTakeover({
      script: 'i=0; while [ $i -lt 2000 ]; do handoff-agent checkpoint || exit 9; i=$((i+1)); echo "step $i"; sleep 0.05; done',
    });
    await until(() => count(out.text, 'step') >= 3, 'agent stepping', 10_000);
    change({ seq: 1, state: 'operator' }); // no mode: soft
    expect(await appliedSeq(1)).toMatchObject({ effective: 'operator' });
    expect(applied).toHaveLength(1);
    expect(run.operatorShell).not.toBeNull();
    expect(out.text).toContain('── Ada took over this run; the agent pauses at its next checkpoint. Hand back from the dashboard. ──');
    expect(JSON.parse(readFileSync(join(run.dir, 'checkpoint.json'), 'utf8'))).toMatchObject({ seq: 1 });
    expect(JSON.parse(readFileSync(run.controlPath, 'utf8'))).toEqual({ seq: 1, state: 'operator', mode: 'soft', by: { id: 'op-1', name: 'Ada' } });
    await until(() => statusLeft(run).includes('OPERATOR Ada HAS CONTROL (agent paused)'), 'status line once halted');
    const steps = count(out.text, 'step');
    await sleep(400);
    expect(count(out.text, 'step')).toBe(steps);
  });

  it('keys reach the operator’s shell byte for byte; if the operator ends it, the next keys open a new one, never the agent', async () => {
    const { run, out, change, appliedSeq, type } = await startTakeover({ script: TICKS });
    change({ seq: 1, state: 'operator', mode: 'hard' });
    await appliedSeq(1);
    // UTF-8, a leading dash, a trailing `;` (tmux would eat it as a separator), quotes and `#{…}`.
    await type(`printf '%s\\n' "-x ü😀 #{pane_id} ;" "$((40+2))";`, '-x ü😀 #{pane_id} ;\r\n42');
    // ^C interrupts what runs in the shell.
    const from = out.text.length;
    await run.input('sleep 30\r');
    await sleep(300);
    await run.input('\x03');
    await type('echo "after-$((1+1))"', 'after-2');
    expect(out.text.slice(from)).toContain('^C');

    const first = run.operatorShell!;
    await run.input('exit\r');
    await until(async () => !(await first.alive()), 'the first shell gone');
    await type('echo "again-$((2+2))"', 'again-4');
    const second = run.operatorShell!;
    expect(second.pid).not.toBe(first.pid);
    expect(shownWindow(run)).toBe('operator');
    expect(await agentStopped(run)).toBe(true);
    expect(windowNames(run)).toHaveLength(2);
  });

  it('a takeover in a directory whose name is a tmux format (`#(…)` runs a command) opens the shell there and runs nothing', async () => {
    const base = await realpath(await mkdtemp(join(tmpdir(), 'handoff-hostile-cwd-')));
    const ran = join(base, 'ran');
    const cwd = join(base, tmuxFormatRunning(ran));
    await mkdir(cwd);
    try {
      const { out, change, appliedSeq, type } = await startTakeover({ script: TICKS }, { cwd });
      await until(() => count(out.text, 'tick') >= 1, 'the agent running');
      change({ seq: 1, state: 'operator', mode: 'hard' });
      await appliedSeq(1);
      await type('echo "cwd-$((1+1))=$PWD="', 'cwd-2=');
      await until(() => out.text.includes(`cwd-2=${cwd}=`), 'the shell in the agent’s directory, its name literal');
      expect(existsSync(ran)).toBe(false);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });

  it('keys go to the agent’s pane when nobody took over', async () => {
    // The agent reads 8 raw bytes and prints them in hex.
    const { run, out } = await startTakeover({ script: "stty raw -echo; head -c 8 | od -An -tx1 | tr -s ' ' | sed 's/^ //'" });
    await sleep(300); // stty must be in place, or the pane's line discipline would handle ^C itself
    await run.input('-é;\x03');
    await run.input('\x00\r\x7f');
    expect((await run.result).exitCode).toBe(0);
    expect(out.text).toContain('2d c3 a9 3b 03 00 0d 7f');
  });
});

describe('hand back', () => {
  it('captures cwd and what the operator changed in the env (redacted) from their shell, closes it, delivers the packet once, then resumes the agent', async () => {
    const m = marker();
    const { run, out, change, appliedSeq, type, inbox, applied } = await startTakeover({ script: TICKS });
    await until(() => count(out.text, 'tick') >= 2, 'agent ticking');
    const correlationId = randomUUID();
    change({ seq: 1, state: 'operator', mode: 'hard', correlationId });
    await appliedSeq(1);
    const shell = run.operatorShell!;
    await type(`cd /tmp && export API_TOKEN=tok-123456 DB_URL=postgres://app:hunter2@db/app NOTE=kept; sleep ${m} & echo "ready-$((3*3))"`, 'ready-9');
    await until(() => /ready-9[\s\S]*operator/.test(out.text), 'the next prompt (it records the env)');
    expect(pgrep(m)).toHaveLength(1);
    const ticks = count(out.text, 'tick');

    const at = new Date().toISOString();
    const handback = { summary: 'rotated the key (was ghp_abcdefghijklmnopqrstuvwxyz0123456789); go on', by: ADA, at };
    change({ seq: 2, state: 'agent', handback, correlationId });
    const report = await appliedSeq(2);
    expect(report).toMatchObject({ seq: 2, effective: 'agent' });
    const handoff = handoffContextSchema.parse(report.handoff);
    expect(handoff.cwd).toBe(await realpath('/tmp'));
    // Only what the operator exported or changed: the run's own variables (FOO, HANDOFF_*) stay out.
    expect(handoff.env).toEqual({
      API_TOKEN: '[REDACTED:env]',
      DB_URL: 'postgres://app:[REDACTED:url-password]@db/app',
      NOTE: 'kept',
    });
    expect(JSON.stringify(handoff)).not.toContain('tok-123456');
    expect(handoff.scrollbackSeq).toBeGreaterThan(0);

    // The shell and everything started from it are gone; the agent's window is shown again.
    expect(run.operatorShell).toBeNull();
    expect(await shell.alive()).toBe(false);
    expect(existsSync(`/proc/${shell.pid}`)).toBe(false);
    expect(windowNames(run)).toHaveLength(1);
    expect(shownWindow(run)).not.toBe('operator');
    expect(pgrep(m)).toEqual([]);
    expect(await operatorShellProcesses(run.dir)).toEqual([]);
    expect(existsSync(join(run.dir, 'operator.state'))).toBe(false);

    const packets = inboxLines(run).filter((l) => l.type === 'handoff');
    expect(packets).toEqual([
      {
        type: 'handoff',
        ts: at,
        actor: 'Ada',
        actorId: 'op-1',
        summary: 'rotated the key (was [REDACTED:github]); go on',
        correlationId,
        context: { ...handoff, recording: `/api/task-runs/${run.runId}/recording.cast` },
      },
    ]);
    // Once per seq: a redelivered hand-back changes nothing.
    expect(change({ seq: 2, state: 'agent', handback, correlationId })).toBe('stale');
    expect(await inbox.deliverHandoff(2, packets[0])).toBe(false);
    expect(inboxLines(run).filter((l) => l.type === 'handoff')).toHaveLength(1);
    expect(applied.map((a) => a.seq)).toEqual([1, 2]);

    // The agent goes on.
    expect(JSON.parse(readFileSync(run.controlPath, 'utf8'))).toEqual({ seq: 2, state: 'agent', mode: null });
    await until(() => count(out.text, 'tick') >= ticks + 3, 'ticks after the hand-back');
    await until(() => tmuxQuery(socketOf(run), ['show-options', '-A', '-t', 'run', '-v', 'status']) === 'off', 'banner cleared');
  });

  it('a hand-back the worker never saw the takeover of still delivers a packet: the agent pane’s cwd, and no env (nobody changed it)', async () => {
    const cwd = await realpath(await mkdtemp(join(tmpdir(), 'handoff-agent-cwd-')));
    try {
      const { run, change, appliedSeq } = await startTakeover(
        { script: TICKS },
        { cwd, env: { PATH: process.env.PATH, LANG: 'C.UTF-8', GITHUB_TOKEN: 'ghp_abcdefghijklmnopqrstuvwxyz0123456789' } },
      );
      // At once, maybe before the wrapper's `cd`: the pane starts in the run's directory (it
      // once started in the worker's, and a hand-back this early reported that; see tmux-run.test).
      change({ seq: 5, state: 'agent', handback: { summary: 'done', by: ADA, at: new Date().toISOString() } });
      const report = await appliedSeq(5);
      expect(report.handoff).toMatchObject({ cwd, env: {} });
      const [packet] = inboxLines(run);
      expect(packet).toMatchObject({ type: 'handoff', summary: 'done', correlationId: null, context: { cwd, env: {} } });
      expect(JSON.stringify(packet)).not.toContain('ghp_');
    } finally {
      await rm(cwd, { recursive: true, force: true });
    }
  });

  it('`agent` without a hand-back closes the shell and resumes, without a packet', async () => {
    const { run, out, change, appliedSeq } = await startTakeover({ script: TICKS });
    change({ seq: 1, state: 'operator', mode: 'hard' });
    await appliedSeq(1);
    const ticks = count(out.text, 'tick');
    change({ seq: 2, state: 'agent' });
    const report = await appliedSeq(2);
    expect(report.effective).toBe('agent');
    expect(report.handoff).toBeUndefined();
    expect(run.operatorShell).toBeNull();
    expect(inboxLines(run)).toEqual([]);
    await until(() => count(out.text, 'tick') >= ticks + 3, 'ticks after resume');
  });

  it('without bash, the shell is `sh -i` and the context comes from tmux and /proc; a hand-back without a correlation id takes the takeover’s', async () => {
    const { run, change, appliedSeq, type } = await startTakeover({ script: TICKS }, { operatorBash: null });
    const correlationId = randomUUID();
    change({ seq: 1, state: 'operator', mode: 'hard', correlationId });
    await appliedSeq(1);
    expect(readFileSync(`/proc/${run.operatorShell!.pid}/cmdline`, 'utf8')).toBe('sh\0-i\0');
    await type('cd /tmp; export CHANGED=by-operator; echo "sh-$((5+5))"', 'sh-10');
    change({ seq: 2, state: 'agent', handback: { summary: 'ok', by: ADA, at: new Date().toISOString() } });
    const report = await appliedSeq(2);
    // sh records no env at its prompts: the context's env comes from /proc (the shell's start), so nothing changed.
    expect(report.handoff).toMatchObject({ cwd: await realpath('/tmp'), env: {} });
    expect(inboxLines(run)).toMatchObject([{ type: 'handoff', correlationId }]);
  });
});

describe('the run ends during a takeover', () => {
  it('cancel closes the operator shell too: tmux exits without the drain timeout and no process remains', async () => {
    const m = marker();
    const { run, change, appliedSeq, type } = await startTakeover({ argv: ['sleep', m] }, { drainTimeoutMs: 10_000 });
    change({ seq: 1, state: 'operator', mode: 'hard' });
    await appliedSeq(1);
    // Left running by the operator, in three ways a shell's hangup alone would not end.
    await type(`sleep ${m} & nohup sleep ${m} >/dev/null 2>&1 & setsid sleep ${m} & echo "bg-$((2*3))"`, 'bg-6');
    await until(() => pgrep(m).length === 4, 'the agent’s sleep and the operator’s three');

    const t0 = Date.now();
    expect(await run.cancel()).toMatchObject({ cancelled: true });
    expect(Date.now() - t0).toBeLessThan(5000); // the 10 s drain timeout never came into play
    expect(pgrep(m)).toEqual([]);
    expect(await operatorShellProcesses(run.dir)).toEqual([]);
    expect(tmuxServerAlive(socketOf(run))).toBe(false);
    expect(existsSync(run.dir)).toBe(false);
  });

  it('the command ending during a takeover closes the shell and ends the run at once', async () => {
    const m = marker();
    const { run, change, appliedSeq, type } = await startTakeover({ argv: ['sleep', m] }, { drainTimeoutMs: 10_000 });
    change({ seq: 1, state: 'operator', mode: 'soft', softGraceMs: 100 });
    await appliedSeq(1);
    await type(`sleep ${m} & echo "bg-$((2*4))"`, 'bg-8');
    await until(() => pgrep(m).length === 2, 'the agent’s sleep and the operator’s');
    const t0 = Date.now();
    // The operator ends the agent's (stopped) process from their shell.
    const [agentSleep] = (await runProcesses(run.pid)).filter((p) => p.pid !== run.pid).map((p) => p.pid);
    await type(`kill -KILL ${agentSleep}; echo "killed-$((3*3))"`, 'killed-9');
    expect((await run.result).exitCode).toBe(137);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(pgrep(m)).toEqual([]);
    expect(tmuxServerAlive(socketOf(run))).toBe(false);
  });
});
