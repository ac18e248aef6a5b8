import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, watch, type FSWatcher } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from './logger.js';
import { shellQuote } from './run-script.js';
import {
  ShareError,
  ShareLifecycle,
  createShareDir,
  lastLine,
  relayLabel,
  removeShare,
  resolveProviderBinary,
  runAttachArgv,
  seconds,
  shareEnvironment,
  shellCommand,
  type ShareAttach,
  type ShareContext,
  type ShareStartOptions,
} from './share-provider.js';
import { runCommand } from './tmux.js';

export interface UptermProviderOptions extends ShareContext {
  /** UPTERM_BIN; unset → `upterm` on the share's PATH. */
  bin?: string;
}

/** Files of an upterm share, inside its directory. */
export const UptermFiles = {
  /** Where the hosted command writes `$UPTERM_ADMIN_SOCKET` once upterm runs it (after the relay accepted the session). */
  adminSocketPath: 'admin-socket',
  /** XDG_RUNTIME_DIR of upterm: recent versions put their sockets there, so they go with the share. */
  runtime: 'runtime',
} as const;

const COMMAND_TIMEOUT_MS = 5000;
/** How much of upterm's stderr/stdout is kept to explain a failure, in characters. */
const TAIL_CHARS = 4096;

/**
 * An upterm share: `upterm host` in its own process group (and session), connected to
 * the relay by a reverse SSH tunnel. Its guests run a read-only tmux client of the run
 * (`--force-command … attach -r`), so upterm has one attach string for everyone: it is
 * reported as both RO and RW (RW grants nothing more). Death is the host process's exit.
 *
 * upterm has no flag to choose its admin socket, but sets `$UPTERM_ADMIN_SOCKET` for
 * the command it hosts, and only runs it once the relay accepted the session: the hosted
 * command writes that path into the share directory, then execs the read-only attach.
 */
export class UptermProvider extends ShareLifecycle {
  readonly provider = 'upterm' as const;
  private readonly opts: UptermProviderOptions;
  private readonly log: Logger;
  private readonly env: Record<string, string | undefined>;
  private bin: string | null = null;
  private host: ChildProcess | null = null;
  private hostExited: Promise<void> = Promise.resolve();
  private cleaning: Promise<void> | null = null;
  private stderrTail = '';
  private hostKeyPrompt = false;
  /** Set while waiting for the session: a host-key prompt ends the wait at once (nobody will answer it). */
  private onPrompt: (() => void) | null = null;

  constructor(opts: UptermProviderOptions) {
    super();
    this.opts = opts;
    this.log = opts.logger;
    this.env = { ...shareEnvironment(opts.env, opts.dir), XDG_RUNTIME_DIR: join(opts.dir, UptermFiles.runtime) };
  }

  protected async launch(opts: ShareStartOptions): Promise<ShareAttach> {
    const deadline = Date.now() + opts.timeoutMs;
    const relay = relayLabel('upterm', opts.relay);
    const bin = resolveProviderBinary('upterm', this.opts.bin, this.opts.env.PATH); // before anything exists
    this.bin = bin;
    try {
      const { dir } = this.opts;
      await createShareDir(dir);
      await mkdir(join(dir, UptermFiles.runtime), { mode: 0o700 });
      this.throwIfStopped();
      this.spawnHost(bin, opts);

      const adminSocket = await this.waitForSession(deadline, opts.timeoutMs, relay);
      const ssh = await this.readSshCommand(adminSocket, deadline, opts.timeoutMs, relay);
      this.throwIfStopped();
      if (this.state !== 'starting' || this.host === null) throw new ShareError(this.exitedMessage(relay));
      this.state = 'ready';
      // One session for every guest, read-only by its forced command: RW is the same string.
      return { attachRo: { upterm_ssh: ssh }, attachRw: { upterm_ssh: ssh } };
    } catch (err) {
      await this.cleanUp();
      this.state = 'dead';
      if (this.stopRequested) throw new ShareError('the share was stopped before it was ready');
      if (err instanceof ShareError) throw err;
      this.log.error({ err }, 'upterm share failed to start');
      throw new ShareError(`upterm could not start: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private spawnHost(bin: string, opts: ShareStartOptions): void {
    const { dir, tmuxBin, runSocket } = this.opts;
    const attach = shellCommand(runAttachArgv(tmuxBin, runSocket, true));
    const socketFile = join(dir, UptermFiles.adminSocketPath);
    const record = `printf '%s' "$UPTERM_ADMIN_SOCKET" > ${shellQuote(`${socketFile}.tmp`)} && mv -f ${shellQuote(`${socketFile}.tmp`)} ${shellQuote(socketFile)}`;
    const args = [
      'host',
      '--accept', // no interactive confirmation: the hub already approved this share
      ...(opts.relay ? ['--server', `ssh://${opts.relay.host}:${opts.relay.port ?? 22}`] : []),
      '--force-command',
      attach,
      '--',
      '/bin/sh',
      '-c',
      `${record}; exec ${attach}`,
    ];
    // Own process group and session (detached), so stop() can signal all of it. stdin is a
    // pipe that is never written: upterm reads no EOF from it, and a host-key prompt shows
    // up on stdout — which also carries the session's attach string, so it is only
    // scanned for that prompt, never kept or logged.
    const host = spawn(bin, args, { env: this.env, cwd: dir, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    this.host = host;
    host.stdin.on('error', () => undefined);
    host.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (!/authenticity of host/i.test(d)) return;
      this.hostKeyPrompt = true;
      this.onPrompt?.();
    });
    host.stderr.setEncoding('utf8').on('data', (d: string) => (this.stderrTail = (this.stderrTail + d).slice(-TAIL_CHARS)));
    this.hostExited = new Promise((resolve) => {
      host.once('exit', () => resolve());
      host.once('error', (err) => {
        this.stderrTail += `\n${err.message}`;
        resolve();
      });
    });
    void this.hostExited.then(() => this.onHostExit(host));
  }

  /** Resolves with the admin socket path once upterm runs the hosted command; rejects if it exits, hits the deadline, or a prompt blocks it. */
  private async waitForSession(deadline: number, timeoutMs: number, relay: string): Promise<string> {
    const file = join(this.opts.dir, UptermFiles.adminSocketPath);
    let watcher: FSWatcher | null = null;
    let timer: ReturnType<typeof setTimeout> | null = null;
    try {
      const outcome = await new Promise<'written' | 'exited' | 'timeout' | 'prompt' | 'stopped'>((resolve) => {
        // The file is renamed into place, so its appearance means it is complete.
        watcher = watch(this.opts.dir, () => {
          if (existsSync(file)) resolve('written');
        });
        watcher.on('error', () => undefined);
        this.onPrompt = () => resolve('prompt');
        if (existsSync(file)) resolve('written');
        if (this.hostKeyPrompt) resolve('prompt');
        void this.hostExited.then(() => resolve('exited'));
        timer = setTimeout(() => resolve(this.hostKeyPrompt ? 'prompt' : 'timeout'), Math.max(1, deadline - Date.now()));
        this.abort.signal.addEventListener('abort', () => resolve('stopped'), { once: true });
      });
      this.throwIfStopped();
      if (outcome === 'written') return (await readFile(file, 'utf8')).trim();
      if (outcome === 'exited') throw new ShareError(this.exitedMessage(relay));
      if (outcome === 'prompt') throw this.hostKeyError(relay);
      throw new ShareError(`upterm did not connect to its relay within ${seconds(timeoutMs)} (${relay})`);
    } finally {
      this.onPrompt = null;
      (watcher as FSWatcher | null)?.close();
      if (timer) clearTimeout(timer);
    }
  }

  /**
   * Asks the session for its SSH command (`upterm session current -o json`). Its admin
   * server may come up a moment after the hosted command runs, so it is asked again
   * until the deadline.
   */
  private async readSshCommand(adminSocket: string, deadline: number, timeoutMs: number, relay: string): Promise<string> {
    for (;;) {
      const current = await runCommand(this.bin!, ['session', 'current', '--admin-socket', adminSocket, '-o', 'json'], {
        env: this.env,
        timeoutMs: Math.min(COMMAND_TIMEOUT_MS, Math.max(1, deadline - Date.now())),
        signal: this.abort.signal,
      });
      this.throwIfStopped();
      if (current.code === 0) {
        const ssh = sshCommandOf(current.stdout);
        if (ssh) return ssh;
        throw new ShareError('upterm connected to its relay but reported no SSH command');
      }
      if (this.host === null) throw new ShareError(this.exitedMessage(relay));
      if (Date.now() >= deadline - 100) {
        const why = lastLine(current.stderr);
        throw new ShareError(`upterm did not report its session within ${seconds(timeoutMs)} (${relay})${why ? `: ${why}` : ''}`);
      }
      await sleep(100, undefined, { signal: this.abort.signal }).catch(() => undefined);
      this.throwIfStopped();
    }
  }

  private onHostExit(host: ChildProcess): void {
    if (this.host !== host) return;
    this.host = null;
    if (this.stopRequested) return;
    if (this.state !== 'ready') return; // while starting, launch() reports it
    this.state = 'dead';
    this.log.warn({ exitCode: host.exitCode, signal: host.signalCode }, 'upterm share exited unexpectedly');
    void this.cleanUp().then(() => {
      if (this.stopRequested) return;
      for (const cb of this.exitCallbacks.splice(0)) cb();
    });
  }

  private exitedMessage(relay: string): string {
    if (this.hostKeyPrompt) return this.hostKeyError(relay).message;
    const why = lastLine(this.stderrTail);
    return `upterm exited before its session was ready (${relay})${why ? `: ${why}` : ''}`;
  }

  private hostKeyError(relay: string): ShareError {
    return new ShareError(
      `upterm does not know the host key of its relay (${relay}): add it to ~/.ssh/known_hosts of the worker's user (ssh-keyscan)`,
    );
  }

  /** Leaves nothing of the share: upterm's group, the hosted and forced commands, orphans, directory. Safe to call twice. */
  protected cleanUp(): Promise<void> {
    this.cleaning ??= (async () => {
      const host = this.host;
      if (host?.pid !== undefined && host.exitCode === null && host.signalCode === null) {
        // SIGTERM lets upterm close its tunnel; removeShare escalates to SIGKILL.
        try {
          process.kill(-host.pid, 'SIGTERM');
        } catch {
          // ESRCH: it just exited.
        }
      }
      host?.stdin?.destroy();
      await removeShare(this.opts.dir, this.opts.killGraceMs ?? 1000);
    })();
    return this.cleaning;
  }

  private throwIfStopped(): void {
    if (this.stopRequested) throw new ShareError('the share was stopped before it was ready');
  }
}

/**
 * The SSH command in `upterm session current -o json`: `sshCommand` when the version
 * reports it, else built from `host` (ssh://relay:port) and the SSH user
 * (`sshUser`, or the session id, which older relays use as the user).
 */
export function sshCommandOf(json: string): string | null {
  let data: unknown;
  try {
    data = JSON.parse(json);
  } catch {
    return null;
  }
  if (typeof data !== 'object' || data === null) return null;
  const o = data as Record<string, unknown>;
  const str = (v: unknown) => (typeof v === 'string' && v.trim() !== '' ? v.trim() : null);
  const direct = str(o.sshCommand);
  if (direct) return direct;
  const user = str(o.sshUser) ?? str(o.sessionId);
  const host = str(o.host);
  if (!user || !host) return null;
  let url: URL;
  try {
    url = new URL(host.includes('://') ? host : `ssh://${host}`);
  } catch {
    return null;
  }
  if (url.protocol !== 'ssh:') return null; // ws(s) relays need `upterm proxy`; the worker only uses ssh://
  const port = url.port && url.port !== '22' ? ` -p ${url.port}` : '';
  return `ssh ${user}@${url.hostname}${port}`;
}
