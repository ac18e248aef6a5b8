import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Ack, AppError, ShareStart } from '@handoff/shared';
import { processesWithEnv } from './process-tree.js';
import { ShareManager } from './share-manager.js';
import { SHARE_DIR_ENV, runSocketOf, shareDirOf, sharesDirOf } from './share-provider.js';
import type { TmuxRun } from './tmux-run.js';
import { killMatching, pgrep, serverPid, tmuxServerAlive, uniqueSleep } from './testing/processes.js';
import { FAKE_TMATE, FAKE_UPTERM, ManualLink, TMUX, capturedLogger, closedPort, startRun, tmuxQuery, until } from './testing/shares.js';

// No tmate relay is reachable and upterm is not installed here, so shares run against
// the stand-ins in test/fixtures (fake-tmate, fake-upterm). The runs, tmux, process
// groups and signals are real; the hub is a link whose acks each test answers by hand.

let runsDir: string;
let marker: string;
let run: TmuxRun;
let runActive: boolean;
const managers: ShareManager[] = [];

beforeEach(async () => {
  runsDir = await mkdtemp(join(tmpdir(), 'handoff-shares-'));
  marker = uniqueSleep();
  run = await startRun(runsDir, marker);
  runActive = true;
});
afterEach(async () => {
  await Promise.all(managers.splice(0).map((m) => m.stopAll()));
  await run.cancel();
  killMatching(runsDir); // only if a test failed half-way
  killMatching(marker);
  await rm(runsDir, { recursive: true, force: true });
});

function manager(opts: { link?: ManualLink; logger?: Logger; tmate?: string; upterm?: string } = {}) {
  const link = opts.link ?? new ManualLink();
  const m = new ShareManager({
    runsDir,
    tmuxBin: () => TMUX,
    binaries: { tmate: 'tmate' in opts ? opts.tmate : FAKE_TMATE, upterm: FAKE_UPTERM },
    env: { PATH: process.env.PATH },
    link,
    logger: opts.logger ?? pino({ level: 'silent' }),
    isRunActive: (runId) => runActive && runId === run.runId,
    retryMs: 100,
    killGraceMs: 300,
  });
  managers.push(m);
  return { m, link };
}

function request(overrides: Partial<ShareStart> = {}): ShareStart {
  return { sessionId: randomUUID(), runId: run.runId, provider: 'tmate', relay: null, allowWeb: true, timeoutMs: 5000, ...overrides };
}

const ok = { ok: true as const, data: {} };
/** `share:start` as the worker answers it (on.ts): the returned data, or the thrown error. */
function answer(m: ShareManager, start: ShareStart, ack: (reply: Ack<unknown>) => void): void {
  try {
    ack({ ok: true, data: m.start(start) });
  } catch (err) {
    ack({ ok: false, error: (err as AppError).toBody() });
  }
}
const dirOf = (sessionId: string) => shareDirOf(runsDir, sessionId);
const shareProcesses = async (sessionId: string) => [
  ...pgrep(dirOf(sessionId)),
  ...(await processesWithEnv(SHARE_DIR_ENV, dirOf(sessionId))).map((p) => p.pid),
];
const gone = async (sessionId: string) => !existsSync(dirOf(sessionId)) && (await shareProcesses(sessionId)).length === 0;
const shareServerPid = (sessionId: string) => serverPid(join(dirOf(sessionId), 'tmate.sock'), FAKE_TMATE);
const logLines = (text: string) => text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);

describe('ShareManager', () => {
  it('acks at once, reports share:ready with the attach strings, lists the share in heartbeats, and never logs RW attach data', async () => {
    const { logger, text } = capturedLogger();
    const { m, link } = manager({ logger });
    const start = request();
    const ack = vi.fn();
    answer(m, start, ack);
    expect(ack).toHaveBeenCalledWith(ok); // before the share is up
    expect(m.aliveSessionIds).toEqual([start.sessionId]);

    await until(() => link.sent.length > 0, 'share:ready');
    const [ready] = link.take();
    expect(ready!.event).toBe('share:ready');
    expect(ready!.payload).toEqual({
      sessionId: start.sessionId,
      attachRo: { tmate_ssh_ro: 'ssh ro-FAKE@fake.relay', tmate_web_ro: 'https://fake.relay/t/ro-FAKE' },
      attachRw: { tmate_ssh: 'ssh rw-SECRET-FAKE@fake.relay', tmate_web: 'https://fake.relay/t/rw-SECRET-FAKE' },
    });
    ready!.ack(ok);
    expect(m.aliveSessionIds).toEqual([start.sessionId]);

    m.stop({ sessionId: start.sessionId, reason: 'revoked' });
    expect(m.aliveSessionIds).toEqual([]);
    await until(() => gone(start.sessionId), 'the share to be gone');
    expect(tmuxServerAlive(runSocketOf(runsDir, run.runId))).toBe(true);

    const logs = text();
    expect(logLines(logs)).toContainEqual(expect.objectContaining({ msg: 'share ready', sessionId: start.sessionId, provider: 'tmate' }));
    expect(logs).not.toContain('rw-SECRET-FAKE');
    expect(logs).not.toContain('SECRET');
    expect(link.sent).toEqual([]); // a stopped share is not reported: the hub ended it
  });

  it('refuses a run that is not here (a malformed start never gets here: see on.test.ts); a repeated start is acked without a second share', async () => {
    const { m, link } = manager();
    const elsewhere = request({ runId: randomUUID() });
    const ack = vi.fn();
    answer(m, elsewhere, ack);
    expect(ack).toHaveBeenCalledWith({ ok: false, error: { code: 'NOT_FOUND', message: `run ${elsewhere.runId} is not running on this worker` } });

    const start = request();
    answer(m, start, ack);
    answer(m, start, ack);
    expect(ack).toHaveBeenLastCalledWith(ok);
    await until(() => link.sent.length > 0, 'share:ready');
    expect(pgrep(`fake-tmate __server ${join(dirOf(start.sessionId), 'tmate.sock')}`)).toHaveLength(1);
    link.take()[0]!.ack(ok);

    m.stop({ sessionId: start.sessionId, reason: 'revoked' });
    await until(() => gone(start.sessionId), 'the share to be gone');
    answer(m, start, ack); // pushed again after it ended: still the one share, not a new one
    expect(ack).toHaveBeenLastCalledWith(ok);
    expect(m.aliveSessionIds).toEqual([]);
    expect(existsSync(dirOf(start.sessionId))).toBe(false);
  });

  it('reports a share that cannot start as share:failed, and sends it again after a reconnect until the hub takes it', async () => {
    const { m, link } = manager({ tmate: '/nonexistent/tmate' });
    const start = request();
    answer(m, start, vi.fn());
    await until(() => link.sent.length > 0, 'share:failed');
    let [failed] = link.take();
    expect(failed!.event).toBe('share:failed');
    expect(failed!.payload).toEqual({ sessionId: start.sessionId, message: 'tmate is not installed on this worker (looked for TMATE_BIN=/nonexistent/tmate)' });
    expect(m.aliveSessionIds).toEqual([]);

    link.ready = false; // the connection dropped before the ack
    failed!.ack(undefined);
    link.ready = true;
    m.resend(); // what the worker does once the hub greeted it again
    [failed] = link.take();
    expect(failed!.event).toBe('share:failed');
    failed!.ack({ ok: false, error: { code: 'UNAVAILABLE', message: 'database busy' } }); // transient: retried
    await until(() => link.sent.length > 0, 'the retry');
    link.take()[0]!.ack(ok);
    m.resend();
    expect(link.sent).toEqual([]); // taken: nothing more to say
  });

  it('reports "share process exited unexpectedly" within 2 s when a share dies; the other shares and the run go on', async () => {
    const { m, link } = manager();
    const [a, b] = [request(), request({ allowWeb: false })];
    answer(m, a, vi.fn());
    answer(m, b, vi.fn());
    await until(() => link.sent.length === 2, 'both shares ready');
    for (const r of link.take()) r.ack(ok);

    const killedAt = Date.now();
    process.kill(shareServerPid(a.sessionId), 'SIGKILL');
    await until(() => link.sent.length > 0, 'share:failed', 2000);
    expect(Date.now() - killedAt).toBeLessThan(2000);
    const [failed] = link.take();
    expect(failed).toMatchObject({ event: 'share:failed', payload: { sessionId: a.sessionId, message: 'share process exited unexpectedly' } });
    expect(m.aliveSessionIds).toEqual([b.sessionId]);
    expect(await gone(a.sessionId)).toBe(true);
    failed!.ack(ok);

    expect(await shareProcesses(b.sessionId)).not.toEqual([]);
    expect(tmuxServerAlive(runSocketOf(runsDir, run.runId))).toBe(true);
    expect(pgrep(marker)).toHaveLength(1);
  });

  it('ends the shares of a run that ended without reporting them as failed', async () => {
    const { logger, text } = capturedLogger();
    const { m, link } = manager({ logger });
    const [a, b] = [request(), request()];
    answer(m, a, vi.fn());
    answer(m, b, vi.fn());
    await until(() => link.sent.length === 2, 'both shares ready');
    for (const r of link.take()) r.ack(ok);

    // The run ends: its tmux server goes first, and a share's client dies with it.
    runActive = false;
    await run.cancel();
    process.kill(shareServerPid(a.sessionId), 'SIGKILL');
    await until(() => logLines(text()).some((l) => l.msg === 'share ended with its run' && l.sessionId === a.sessionId), 'the share to end with its run');
    await m.stopRun(run.runId); // what the worker does once the run's outcome is known
    expect(await gone(a.sessionId)).toBe(true);
    expect(await gone(b.sessionId)).toBe(true);
    expect(m.aliveSessionIds).toEqual([]);
    expect(link.sent).toEqual([]);
  });

  it('stops every share (tmate and upterm) when the worker stops, and takes no new one', async () => {
    const { m, link } = manager();
    const shares = [request(), request({ provider: 'upterm', relay: { host: '127.0.0.1', port: 2222, fingerprints: {} } })];
    for (const s of shares) answer(m, s, vi.fn());
    await until(() => link.sent.length === 2, 'both shares ready');
    expect(link.sent.map((s) => s.event)).toEqual(['share:ready', 'share:ready']);

    await m.stopAll();
    for (const s of shares) expect(await gone(s.sessionId)).toBe(true);
    const ack = vi.fn();
    answer(m, request(), ack);
    expect(ack).toHaveBeenCalledWith({ ok: false, error: { code: 'UNAVAILABLE', message: 'worker is shutting down' } });
    expect(tmuxServerAlive(runSocketOf(runsDir, run.runId))).toBe(true);
  });

  it('cleans the shares a crashed worker left (a real tmate server, an upterm host, their clients) before taking work', async () => {
    const runSocket = runSocketOf(runsDir, run.runId);
    // What a SIGKILLed worker leaves: share directories with live processes carrying the share marker.
    const tmateId = randomUUID();
    const tmateDir = dirOf(tmateId);
    await mkdir(tmateDir, { recursive: true, mode: 0o700 });
    await writeFile(join(tmateDir, 'tmate.conf'), `set -g tmate-server-host "127.0.0.1"\nset -g tmate-server-port ${await closedPort()}\n`);
    execFileSync('/usr/bin/tmate', ['-S', join(tmateDir, 'tmate.sock'), '-f', join(tmateDir, 'tmate.conf'), 'new-session', '-d', '-s', 'share', `${TMUX} -S ${runSocket} attach -t run`], {
      env: { PATH: process.env.PATH, [SHARE_DIR_ENV]: tmateDir },
    });
    const uptermId = randomUUID();
    const uptermDir = dirOf(uptermId);
    await mkdir(join(uptermDir, 'runtime'), { recursive: true, mode: 0o700 });
    const host = spawn(FAKE_UPTERM, ['host', '--accept', '--', 'sleep', marker], {
      env: { PATH: process.env.PATH, [SHARE_DIR_ENV]: uptermDir, XDG_RUNTIME_DIR: join(uptermDir, 'runtime') },
      detached: true,
      stdio: 'ignore',
    });
    host.unref();
    const unrelated = join(sharesDirOf(runsDir), 'not-a-share');
    await mkdir(unrelated);
    await until(() => tmuxQuery(runSocket, ['list-clients', '-F', '#{client_pid}']) !== '', 'the stale tmate to attach to the run');
    // Steady state, as a crash leaves it: upterm runs its hosted command (the marker is in
    // the command lines of the run's sleep, of upterm, and of the hosted sleep).
    await until(() => pgrep(marker).length === 3, "the stale upterm's hosted command");
    expect((await shareProcesses(tmateId)).length).toBeGreaterThan(0);

    const { logger, text } = capturedLogger();
    const { m } = manager({ logger, tmate: '/usr/bin/tmate' }); // the tmate that left the server behind
    const t0 = Date.now();
    expect(await m.cleanStale()).toBe(2);
    expect(Date.now() - t0).toBeLessThan(1000);

    expect(await gone(tmateId)).toBe(true);
    expect(await gone(uptermId)).toBe(true);
    expect(pgrep(marker)).toHaveLength(1); // only the run's own sleep
    expect(existsSync(unrelated)).toBe(true); // only session-id-named directories are touched
    expect(tmuxServerAlive(runSocket)).toBe(true);
    expect(tmuxQuery(runSocket, ['list-clients', '-F', '#{client_pid}'])).toBe('');
    expect(logLines(text()).filter((l) => l.msg === 'removed a stale share left by a previous worker')).toHaveLength(2);
    expect(await m.cleanStale()).toBe(0);
  });
});
