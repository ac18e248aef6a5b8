import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { processesWithEnv } from './process-tree.js';
import { SHARE_DIR_ENV, runSocketOf, shareDirOf } from './share-provider.js';
import type { TmuxRun } from './tmux-run.js';
import { UptermProvider, sshCommandOf } from './upterm-provider.js';
import { killMatching, pgrep, tmuxServerAlive, uniqueSleep } from './testing/processes.js';
import { FAKE_UPTERM, TMUX, closedPort, startRun, until } from './testing/shares.js';

// upterm is not installed here and no upterm relay is reachable: everything but the
// "missing binary" case runs against test/fixtures/fake-upterm, a stand-in that speaks
// the part of upterm's CLI the worker uses. tmux, processes and signals are real.

let runsDir: string;
let marker: string;
let run: TmuxRun;
const shares: UptermProvider[] = [];

beforeEach(async () => {
  runsDir = await mkdtemp(join(tmpdir(), 'handoff-upterm-'));
  marker = uniqueSleep();
  run = await startRun(runsDir, marker);
});
afterEach(async () => {
  await Promise.all(shares.splice(0).map((s) => s.stop()));
  await run.cancel();
  killMatching(runsDir); // only if a test failed half-way
  killMatching(marker);
  await rm(runsDir, { recursive: true, force: true });
});

function share(opts: { bin?: string; env?: Record<string, string | undefined> } = {}) {
  const sessionId = randomUUID();
  const dir = shareDirOf(runsDir, sessionId);
  const provider = new UptermProvider({
    sessionId,
    runId: run.runId,
    dir,
    runSocket: runSocketOf(runsDir, run.runId),
    tmuxBin: TMUX,
    env: { PATH: process.env.PATH, ...opts.env },
    logger: pino({ level: 'silent' }),
    killGraceMs: 300,
    bin: 'bin' in opts ? opts.bin : FAKE_UPTERM,
  });
  shares.push(provider);
  return { provider, dir };
}

const relay = (port: number) => ({ host: '127.0.0.1', port, fingerprints: {} });
const runSocket = () => runSocketOf(runsDir, run.runId);
const shareProcesses = async (dir: string) => [...pgrep(dir), ...(await processesWithEnv(SHARE_DIR_ENV, dir)).map((p) => p.pid)];
/** How `sh` splits a command line into words (upterm splits --force-command the same way). */
const words = (commandLine: string) => execFileSync('sh', ['-c', `set -- ${commandLine}; printf '%s\\n' "$@"`], { encoding: 'utf8' }).trim().split('\n');

describe('UptermProvider (against the fake-upterm stand-in)', () => {
  it('reports the session SSH command (the same string RO and RW); guests get a read-only attach; stop leaves the run running', async () => {
    const { provider, dir } = share();
    const attach = await provider.start({ relay: relay(2222), allowWeb: false, timeoutMs: 5000 });
    const ssh = 'ssh FAKESESSION0123456789@127.0.0.1 -p 2222';
    expect(attach).toEqual({ attachRo: { upterm_ssh: ssh }, attachRw: { upterm_ssh: ssh } });
    expect(statSync(dir).mode & 0o777).toBe(0o700);

    const given = JSON.parse(await readFile(join(dir, 'runtime', 'fake-upterm.json'), 'utf8'));
    expect(given.flags).toMatchObject({ accept: true, server: 'ssh://127.0.0.1:2222' });
    expect(words(given.flags['force-command'])).toEqual([TMUX, '-S', runSocket(), 'attach', '-r', '-t', 'run']);
    expect(given.argv.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    expect(given.argv[2]).toContain(`exec ${given.flags['force-command']}`);
    expect(pgrep(dir).length).toBeGreaterThanOrEqual(1); // upterm host, in its own process group

    await provider.stop();
    expect(await shareProcesses(dir)).toEqual([]);
    expect(existsSync(dir)).toBe(false);
    expect(tmuxServerAlive(runSocket())).toBe(true);
    expect(pgrep(marker)).toHaveLength(1);
  });

  it("takes upterm's own sshCommand when it reports one, and the default relay when none is configured", async () => {
    const attach = await share({ env: { FAKE_UPTERM_JSON_SSH: '1' } }).provider.start({ relay: null, allowWeb: false, timeoutMs: 5000 });
    expect(attach.attachRo).toEqual({ upterm_ssh: 'ssh SECRET-FAKE-FAKESESSION0123456789@uptermd.upterm.dev' });
  });

  it('fails with upterm\'s own reason when it exits before the session is up', async () => {
    const { provider, dir } = share({ env: { FAKE_UPTERM_FAIL: 'ssh: dial tcp 127.0.0.1:9: connect: connection refused' } });
    await expect(provider.start({ relay: relay(9), allowWeb: false, timeoutMs: 5000 })).rejects.toThrow(
      'upterm exited before its session was ready (relay 127.0.0.1:9): Error: ssh: dial tcp 127.0.0.1:9: connect: connection refused',
    );
    expect(await shareProcesses(dir)).toEqual([]);
    expect(existsSync(dir)).toBe(false);
  });

  it('fails within the timeout when the relay never answers, leaving nothing', async () => {
    const port = await closedPort();
    const { provider, dir } = share({ env: { FAKE_UPTERM_READY_MS: 'never' } });
    const t0 = Date.now();
    await expect(provider.start({ relay: relay(port), allowWeb: false, timeoutMs: 1500 })).rejects.toThrow(
      `upterm did not connect to its relay within 1.5s (relay 127.0.0.1:${port})`,
    );
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1400);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(await shareProcesses(dir)).toEqual([]);
    expect(tmuxServerAlive(runSocket())).toBe(true);
  });

  it("says what to do when upterm does not know the relay's host key", async () => {
    const { provider } = share({ env: { FAKE_UPTERM_HOSTKEY: '1' } });
    await expect(provider.start({ relay: relay(2222), allowWeb: false, timeoutMs: 5000 })).rejects.toThrow(
      "upterm does not know the host key of its relay (relay 127.0.0.1:2222): add it to ~/.ssh/known_hosts of the worker's user (ssh-keyscan)",
    );
  });

  it('notices a SIGKILLed upterm within 2 s and leaves no orphan; the run goes on', async () => {
    const { provider, dir } = share();
    await provider.start({ relay: relay(2222), allowWeb: false, timeoutMs: 5000 });
    let noticedAt = 0;
    provider.onExit(() => (noticedAt = Date.now()));
    const [host] = pgrep(`${FAKE_UPTERM} host`).filter((pid) => pgrep(dir).includes(pid));
    expect(host).toBeGreaterThan(0);
    const killedAt = Date.now();
    process.kill(host!, 'SIGKILL');
    await until(() => noticedAt > 0, 'the share death to be noticed', 2000);
    expect(noticedAt - killedAt).toBeLessThan(2000);
    expect(await shareProcesses(dir)).toEqual([]);
    expect(tmuxServerAlive(runSocket())).toBe(true);
  });
});

describe('UptermProvider (real environment)', () => {
  it('fails at once, naming what it looked for, when upterm is missing (it is not installed here)', async () => {
    const onPath = share({ bin: undefined });
    const t0 = Date.now();
    await expect(onPath.provider.start({ relay: null, allowWeb: false, timeoutMs: 15_000 })).rejects.toThrow(
      'upterm is not installed on this worker (looked for upterm on PATH; set UPTERM_BIN to its path)',
    );
    expect(Date.now() - t0).toBeLessThan(200);
    expect(existsSync(onPath.dir)).toBe(false);
    await expect(share({ bin: '/opt/nowhere/upterm' }).provider.start({ relay: null, allowWeb: false, timeoutMs: 15_000 })).rejects.toThrow(
      'upterm is not installed on this worker (looked for UPTERM_BIN=/opt/nowhere/upterm)',
    );
  });
});

describe('sshCommandOf', () => {
  it('prefers sshCommand, else builds one from the SSH user (or session id) and an ssh:// host', () => {
    expect(sshCommandOf('{"sshCommand":"ssh tok@relay -p 2"}')).toBe('ssh tok@relay -p 2');
    expect(sshCommandOf('{"sessionId":"abc","host":"ssh://uptermd.upterm.dev:22"}')).toBe('ssh abc@uptermd.upterm.dev');
    expect(sshCommandOf('{"sessionId":"abc","sshUser":"abc:bm9kZQ==","host":"ssh://relay.example:2222"}')).toBe('ssh abc:bm9kZQ==@relay.example -p 2222');
  });

  it('gives up on what it cannot build from', () => {
    expect(sshCommandOf('not json')).toBeNull();
    expect(sshCommandOf('{"sessionId":"abc"}')).toBeNull();
    expect(sshCommandOf('{"sessionId":"abc","host":"wss://relay.example"}')).toBeNull();
  });
});
