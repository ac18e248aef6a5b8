import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ShareStart } from '@handoff/shared';
import type { Logger } from './logger.js';
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
import { tmux } from './tmux.js';

export interface TmateProviderOptions extends ShareContext {
  /** TMATE_BIN; unset → `tmate` on the share's PATH. */
  bin?: string;
}

/** Files of a tmate share, inside its directory. */
export const TmateFiles = { socket: 'tmate.sock', config: 'tmate.conf' } as const;

/** A wait-for channel nobody signals: its client lives exactly as long as the tmate server. */
const WATCH_CHANNEL = 'handoff-share-watch';
/** How long a single tmate client command may take once the share is up, in ms. */
const COMMAND_TIMEOUT_MS = 5000;

// Values written into tmate's config file: anything else could inject config commands.
const SAFE_HOST = /^[A-Za-z0-9.-]+$|^\[?[0-9A-Fa-f:.]+\]?$/;
const SAFE_FINGERPRINT = /^[A-Za-z0-9:+/=._-]+$/;

/**
 * A tmate share: a private tmate server (socket in the share directory) whose one pane
 * is a tmux client attached to the run's session. tmate daemonizes into its own session
 * and process group. Its death is noticed without polling: a `wait-for` client on a
 * channel nobody signals exits the moment the server goes (even on SIGKILL).
 */
export class TmateProvider extends ShareLifecycle {
  readonly provider = 'tmate' as const;
  private readonly opts: TmateProviderOptions;
  private readonly log: Logger;
  private readonly env: Record<string, string | undefined>;
  private readonly socket: string;
  private bin: string | null = null;
  private cleaning: Promise<void> | null = null;
  private watcher: ChildProcess | null = null;
  /** The server is gone (noticed by the watcher). */
  private gone = false;

  constructor(opts: TmateProviderOptions) {
    super();
    this.opts = opts;
    this.log = opts.logger;
    this.env = shareEnvironment(opts.env, opts.dir);
    this.socket = join(opts.dir, TmateFiles.socket);
  }

  protected async launch(opts: ShareStartOptions): Promise<ShareAttach> {
    const deadline = Date.now() + opts.timeoutMs;
    const relay = relayLabel('tmate', opts.relay);
    // Both fail before anything exists: nothing to clean up.
    const bin = resolveProviderBinary('tmate', this.opts.bin, this.opts.env.PATH);
    const config = tmateConfig(this.opts.sessionId, opts.relay);
    this.bin = bin;
    try {
      await createShareDir(this.opts.dir);
      const configPath = join(this.opts.dir, TmateFiles.config);
      await writeFile(configPath, config, { mode: 0o600 });
      this.throwIfStopped();

      // Always our own config file: the worker user's ~/.tmate.conf must not redirect
      // shares to another relay or change what they expose.
      const attach = shellCommand(runAttachArgv(this.opts.tmuxBin, this.opts.runSocket, false));
      const created = await this.tmate(['-f', configPath, 'new-session', '-d', '-s', 'share', attach], remaining(deadline));
      this.throwIfStopped();
      if (created.code !== 0) throw new ShareError(`tmate could not start: ${lastLine(created.stderr) || `exit code ${created.code}`}`);
      this.watch();

      await this.waitReady(deadline, opts.timeoutMs, relay);
      const attachData = await this.readAttach(opts.allowWeb);
      this.throwIfStopped();
      if (this.gone) throw new ShareError(`tmate exited right after connecting to its relay (${relay})`);
      this.state = 'ready';
      return attachData;
    } catch (err) {
      await this.cleanUp();
      this.state = 'dead';
      if (this.stopRequested) throw new ShareError('the share was stopped before it was ready');
      if (err instanceof ShareError) throw err;
      this.log.error({ err }, 'tmate share failed to start');
      throw new ShareError(`tmate could not start: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /**
   * Waits for tmate's own `tmate-ready` signal; the wait client also ends when the
   * server dies or at the deadline. Its exit code proves nothing (a tmate client killed
   * at the deadline exits 0), so the attach string tmate then has is what decides — it
   * also covers a relay that answered before the wait began.
   */
  private async waitReady(deadline: number, timeoutMs: number, relay: string): Promise<void> {
    const connected = async () => (await this.tmate(['display', '-p', '#{tmate_ssh}'], COMMAND_TIMEOUT_MS)).stdout.trim() !== '';
    const early = new AbortController();
    const waiting = tmux(this.bin!, this.socket, ['wait', 'tmate-ready'], {
      env: this.env,
      timeoutMs: remaining(deadline),
      signal: AbortSignal.any([this.abort.signal, early.signal]),
    });
    if (await connected()) early.abort();
    const ended = await waiting;
    this.throwIfStopped();
    if (early.signal.aborted || (await connected())) return;
    this.throwIfStopped();
    if (!(await this.serverAlive())) throw new ShareError(`tmate exited before connecting to its relay (${relay})`);
    if (Date.now() >= deadline - 50) throw new ShareError(`tmate did not connect to its relay within ${seconds(timeoutMs)} (${relay})`);
    throw new ShareError(`tmate could not start: ${lastLine(ended.stderr) || `its ready wait ended with exit code ${ended.code}`}`);
  }

  private async readAttach(allowWeb: boolean): Promise<ShareAttach> {
    const read = async (name: string) => (await this.tmate(['display', '-p', `#{${name}}`], COMMAND_TIMEOUT_MS)).stdout.trim();
    const ro = await read('tmate_ssh_ro');
    const rw = await read('tmate_ssh');
    if (!ro || !rw) throw new ShareError('tmate connected to its relay but reported no ssh attach strings');
    const attachRo: Record<string, string> = { tmate_ssh_ro: ro };
    const attachRw: Record<string, string> = { tmate_ssh: rw };
    if (allowWeb) {
      // A relay without a web front end reports none: the share works over ssh only.
      const webRo = await read('tmate_web_ro');
      const web = await read('tmate_web');
      if (webRo) attachRo.tmate_web_ro = webRo;
      if (web) attachRw.tmate_web = web;
    }
    return { attachRo, attachRw };
  }

  /** Starts the client whose exit means the server is gone. */
  private watch(): void {
    const watcher = spawn(this.bin!, ['-S', this.socket, 'wait-for', WATCH_CHANNEL], { env: this.env, stdio: 'ignore' });
    watcher.unref();
    this.watcher = watcher;
    let handled = false;
    const onEnd = () => {
      if (handled) return;
      handled = true;
      if (this.watcher === watcher) this.watcher = null;
      void this.onWatcherEnd();
    };
    watcher.once('exit', onEnd);
    watcher.once('error', onEnd);
  }

  private async onWatcherEnd(): Promise<void> {
    if (this.stopRequested || this.gone) return;
    if (await this.serverAlive()) {
      // The watcher itself was killed (e.g. by hand): the share is fine, watch again.
      if (this.stopRequested) return;
      this.log.warn('tmate watcher ended while the share is up; watching again');
      setTimeout(() => this.stopRequested || this.gone || this.watch(), 200).unref();
      return;
    }
    this.gone = true;
    // While starting, launch() sees the failure itself and cleans up.
    if (this.state !== 'ready' || this.stopRequested) return;
    this.state = 'dead';
    this.log.warn('tmate share exited unexpectedly');
    await this.cleanUp();
    if (this.stopRequested) return;
    for (const cb of this.exitCallbacks.splice(0)) cb();
  }

  private async serverAlive(): Promise<boolean> {
    const probe = await tmux(this.bin!, this.socket, ['display', '-p', '#{pid}'], { env: this.env, timeoutMs: COMMAND_TIMEOUT_MS });
    return probe.code === 0 && probe.stdout.trim() !== '';
  }

  /** Leaves nothing of the share: server (and its pane clients), watcher, orphans, directory. Safe to call twice. */
  protected cleanUp(): Promise<void> {
    this.cleaning ??= (async () => {
      this.watcher?.kill('SIGKILL');
      // kill-server first: tmate tells its relay the session ended and hangs up its panes.
      if (this.bin) await tmux(this.bin, this.socket, ['kill-server'], { env: this.env, timeoutMs: COMMAND_TIMEOUT_MS });
      await removeShare(this.opts.dir, this.opts.killGraceMs ?? 1000);
    })();
    return this.cleaning;
  }

  private tmate(args: readonly string[], timeoutMs: number) {
    return tmux(this.bin!, this.socket, args, { env: this.env, cwd: this.opts.dir, timeoutMs, signal: this.abort.signal });
  }

  private throwIfStopped(): void {
    if (this.stopRequested) throw new ShareError('the share was stopped before it was ready');
  }
}

/**
 * The share's tmate config: the relay to use, and its host-key fingerprints (without
 * them tmate would only trust its public relay's keys). No relay → tmate's defaults.
 */
export function tmateConfig(sessionId: string, relay: ShareStart['relay']): string {
  const lines = [`# Handoff share ${sessionId} (generated by the worker; see worker/src/tmate-provider.ts).`];
  if (relay) {
    if (!SAFE_HOST.test(relay.host)) throw new ShareError(`the relay host ${JSON.stringify(relay.host)} is not a valid host name`);
    lines.push(`set -g tmate-server-host "${relay.host}"`);
    if (relay.port !== null) lines.push(`set -g tmate-server-port ${relay.port}`);
    for (const [kind, fingerprint] of [['rsa', relay.fingerprints.rsa], ['ed25519', relay.fingerprints.ed25519]] as const) {
      if (fingerprint === undefined) continue;
      if (!SAFE_FINGERPRINT.test(fingerprint)) throw new ShareError(`the relay's ${kind} fingerprint is malformed`);
      lines.push(`set -g tmate-server-${kind}-fingerprint "${fingerprint}"`);
    }
  }
  return `${lines.join('\n')}\n`;
}

function remaining(deadline: number): number {
  return Math.max(1, deadline - Date.now());
}
