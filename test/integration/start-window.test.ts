import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Socket } from 'socket.io-client';
import type { LiveSession } from '@handoff/shared';
import { api, connect, emitAck, joinFrames, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';
import { findExecutable } from '../../worker/src/tmux.js';

// STAND-IN: no tmate relay is reachable here, so the share is test/fixtures/fake-tmate (see
// shares.test.ts). Everything else is real: hub, worker process, tmux.
const FAKE_TMATE = path.resolve('test/fixtures/fake-tmate');
/** How long the worker's `go` (the signal that lets the run's command start) is held back. */
const GO_DELAY_S = 3;

/**
 * The window between a run's start report and its command's `go`: the worker reports the start
 * as soon as tmux runs the pane with its output captured, and lets the command go meanwhile
 * (docs/decisions.md). Here `go` is held back for seconds by a `tmux` on the worker's PATH that
 * sleeps before passing `wait-for -S go` to the real tmux, so what a user does in the window —
 * keys typed, a share started — is sure to land in it, and the test shows it did: the run's
 * command prints when it went, and that is after the keys were sent and after the share was ready.
 */
describe('the window between the start report and the command’s go (real hub, worker, tmux)', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let operator: string;
  let admin: string;
  let viewer: Viewer;
  let typist: Socket;
  let binDir: string;
  const sessions = new Map<string, LiveSession & { seenAt: number }>();

  beforeAll(async () => {
    binDir = mkdtempSync(path.join(tmpdir(), 'handoff-slow-go-'));
    const realTmux = findExecutable('tmux', process.env.PATH);
    if (!realTmux) throw new Error('tmux not found on PATH');
    writeFileSync(
      path.join(binDir, 'tmux'),
      `#!/bin/sh\ncase " $* " in *" wait-for -S go "*) sleep ${GO_DELAY_S} ;; esac\nexec ${realTmux} "$@"\n`,
    );
    chmodSync(path.join(binDir, 'tmux'), 0o755);
    hub = await startTestHub({ env: { SWEEP_INTERVAL: '100ms', LIVE_PROVIDER_START_TIMEOUT: '5s' } });
    operator = await hub.token('operator');
    admin = await hub.token('admin'); // an external share needs an admin (deny by default)
    viewer = await Viewer.connect(hub.url, operator);
    viewer.socket.on('session:updated', (s: LiveSession) => sessions.set(s.id, { ...s, seenAt: Date.now() }));
    typist = await connect(hub.url, '/dashboard', operator);
    worker = startWorker({
      hubUrl: hub.url,
      token: await hub.workerToken(`window-${randomBytes(3).toString('hex')}`),
      env: { PATH: `${binDir}:${process.env.PATH ?? '/usr/bin:/bin'}`, TMATE_BIN: FAKE_TMATE },
    });
  });
  afterAll(async () => {
    typist?.close();
    viewer?.close();
    await worker?.stop();
    await hub?.stop();
    if (binDir) rmSync(binDir, { recursive: true, force: true });
  });

  /** Creates a run whose command prints `went <epoch ms>` first; resolves once the hub has it running (its command held back). */
  const runningBeforeGo = async (rest: string) => {
    const res = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: `echo "went $(($(date +%s%N) / 1000000))"; ${rest}` } });
    expect(res.status).toBe(201);
    const runId = res.body.id as string;
    await emitAck(viewer.socket, 'run:subscribe', { runId });
    await emitAck(viewer.socket, 'term:subscribe', { runId });
    await viewer.untilStatus(runId, ['running']);
    return runId;
  };
  const output = (runId: string) => joinFrames([...new Map((viewer.live.get(runId) ?? []).map((f) => [f.seq, f])).values()]);
  const wentAt = async (runId: string) => Number((await viewer.until('the command went', () => /went (\d{13})/.exec(output(runId))?.[1], 15_000)));

  it('keys typed before the command went wait for it: acknowledged, typed once, read by the command', async () => {
    const m = randomBytes(3).toString('hex');
    const runId = await runningBeforeGo('read -r line; echo "got:$line"');
    await viewer.until('web share READY', () => viewer.runs.get(runId)?.sessions.some((s) => s.provider === 'web' && s.status === 'READY'));
    const granted = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/live-session/grant-write`, { ttlMinutes: 5 });
    expect(granted.status, JSON.stringify(granted.body)).toBe(200);

    const sentAt = Date.now();
    const ack = await emitAck(typist, 'term:input', { runId, data: `key-${m}\r` });
    expect(ack).toMatchObject({ ok: true });
    const went = await wentAt(runId);
    // The race happened: the keys were on their way before the command went.
    expect(sentAt).toBeLessThan(went);

    await viewer.untilStatus(runId, ['succeeded'], 15_000);
    const out = output(runId);
    expect(out).toContain(`got:key-${m}`);
    expect(out.split(`got:key-${m}`)).toHaveLength(2); // read once, not typed twice
  });

  it('a share started before the command went attaches to the run and is READY; the run then goes and ends it', async () => {
    const runId = await runningBeforeGo('sleep 1');
    const res = await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'tmate' });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const id = (res.body.session as LiveSession).id;
    const ready = await viewer.until('share READY', () => (sessions.get(id)?.status === 'READY' ? sessions.get(id) : undefined), 10_000);
    const went = await wentAt(runId);
    // The share was ready before the command went: it was made in the window.
    expect(ready.seenAt).toBeLessThan(went);
    expect(ready.attachRo).toMatchObject({ tmate_ssh_ro: 'ssh ro-FAKE@fake.relay' });
    // The share's tmux client attaches to this run's own tmux server.
    const shareDir = path.join(worker.runDir, 'shares', id);
    const command = readFileSync(path.join(shareDir, readdirSync(shareDir).find((f) => f.endsWith('.command'))!), 'utf8');
    expect(command).toContain(path.join(worker.runDir, runId, 'tmux.sock'));
    expect(command).toMatch(/'attach' ('-r' )?'-t' 'run'/);

    await viewer.untilStatus(runId, ['succeeded'], 15_000);
    await viewer.until('share ENDED with the run', () => sessions.get(id)?.status === 'ENDED', 10_000);
  });
});
