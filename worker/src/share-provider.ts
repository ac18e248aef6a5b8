import { chmod, mkdir, rm } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import type { ExternalProvider, ShareStart } from '@handoff/shared';
import type { Logger } from './logger.js';
import { processesWithEnv, reapProcesses } from './process-tree.js';
import { RunFiles, shellQuote } from './run-script.js';
import { findExecutable } from './tmux.js';

/** Attach strings of a ready share. RO ones are shown to every viewer; RW ones only to a write grantee and never logged. */
export interface ShareAttach {
  attachRo: Record<string, string>;
  attachRw: Record<string, string>;
}

/** What a provider needs from `share:start` to connect. */
export type ShareStartOptions = Pick<ShareStart, 'relay' | 'allowWeb' | 'timeoutMs'>;

/** Where one share lives and what it attaches to. */
export interface ShareContext {
  sessionId: string;
  runId: string;
  /** The share's own directory (`<WORKER_RUN_DIR>/shares/<sessionId>/`); the provider creates it (0700) and removes it. */
  dir: string;
  /** The run's tmux server socket (`<WORKER_RUN_DIR>/<runId>/tmux.sock`). */
  runSocket: string;
  /** Absolute path of tmux: the share's attach command runs with the share's PATH. */
  tmuxBin: string;
  /** Environment of the share's processes, already without the worker token. */
  env: Record<string, string | undefined>;
  logger: Logger;
  /** Stop: ms between SIGTERM and SIGKILL of the share's processes. Default 1000. */
  killGraceMs?: number;
}

/**
 * One external share of a run: its own process group(s), its own directory, never
 * inside the run's tmux server — killing a share only detaches a client from the run.
 * One instance per share; `start()` is called once.
 */
export interface ShareProvider {
  readonly provider: ExternalProvider;
  /**
   * Starts the share and waits (at most `timeoutMs`) until it is connected to its relay.
   * Rejects with a `ShareError` whose message an operator can act on, after having
   * removed everything it started. Rejects too if `stop()` is called meanwhile.
   */
  start(opts: ShareStartOptions): Promise<ShareAttach>;
  /** Kills every process of the share and removes its directory. Idempotent; never touches the run. */
  stop(): Promise<void>;
  /**
   * `cb` runs once when the share's processes die on their own after `start()` resolved
   * (not after `stop()`), once everything left of the share has been removed.
   */
  onExit(cb: () => void): void;
}

/**
 * The lifecycle both providers share: `start()` once, `stop()` idempotent (aborts a start
 * in progress, waits for it, then cleans up), exit callbacks. Subclasses supply `launch`
 * (start and wait for the relay, honouring `abort`) and `cleanUp` (kill and remove all).
 */
export abstract class ShareLifecycle implements ShareProvider {
  abstract readonly provider: ExternalProvider;
  protected readonly abort = new AbortController();
  protected state: 'idle' | 'starting' | 'ready' | 'dead' = 'idle';
  protected readonly exitCallbacks: Array<() => void> = [];
  private starting: Promise<unknown> = Promise.resolve();
  private stopping: Promise<void> | null = null;

  start(opts: ShareStartOptions): Promise<ShareAttach> {
    if (this.state !== 'idle') return Promise.reject(new Error(`a ${this.provider} share starts once`));
    this.state = 'starting';
    const started = this.launch(opts);
    this.starting = started.catch(() => undefined);
    return started;
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.abort.abort();
      await this.starting;
      await this.cleanUp();
    })();
    return this.stopping;
  }

  onExit(cb: () => void): void {
    this.exitCallbacks.push(cb);
  }

  protected get stopRequested(): boolean {
    return this.abort.signal.aborted;
  }

  protected abstract launch(opts: ShareStartOptions): Promise<ShareAttach>;
  protected abstract cleanUp(): Promise<void>;
}

/** A share failure to show an operator. Its message never contains attach data. */
export class ShareError extends Error {
  override readonly name = 'ShareError';
}

/** Where shares live, under WORKER_RUN_DIR (next to the run directories, which are uuid-named). */
export const SHARES_DIR = 'shares';
/** Set in every share process's environment: finds all of a share's processes, orphans included. */
export const SHARE_DIR_ENV = 'HANDOFF_SHARE_DIR';
/** The session name of a run inside its tmux server (see tmux-run.ts). */
const RUN_SESSION = 'run';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `name` is a share (or run) directory name: only those are ever removed. */
export function isSessionDirName(name: string): boolean {
  return UUID.test(name);
}

export function sharesDirOf(runsDir: string): string {
  return join(runsDir, SHARES_DIR);
}

export function shareDirOf(runsDir: string, sessionId: string): string {
  if (!isSessionDirName(sessionId)) throw new Error(`session id ${JSON.stringify(sessionId)} is not a safe directory name`);
  return join(runsDir, SHARES_DIR, sessionId);
}

export function runSocketOf(runsDir: string, runId: string): string {
  return join(runsDir, runId, RunFiles.socket);
}

const BINARY_ENV = { tmate: 'TMATE_BIN', upterm: 'UPTERM_BIN' } as const satisfies Record<ExternalProvider, string>;

/** The provider's binary: `configured` (TMATE_BIN / UPTERM_BIN) when set, else found on PATH; null when missing. */
export function findProviderBinary(provider: ExternalProvider, configured: string | undefined, pathVar: string | undefined): string | null {
  if (!configured) return findExecutable(provider, pathVar);
  // A configured path is taken as given (relative to the worker's cwd), never searched on PATH.
  return findExecutable(isAbsolute(configured) || configured.includes('/') ? resolve(configured) : configured, pathVar);
}

/** Like `findProviderBinary`, but throws the operator-readable error at once, before anything is started. */
export function resolveProviderBinary(provider: ExternalProvider, configured: string | undefined, pathVar: string | undefined): string {
  const found = findProviderBinary(provider, configured, pathVar);
  if (found) return found;
  const lookedFor = configured ? `${BINARY_ENV[provider]}=${configured}` : `${provider} on PATH; set ${BINARY_ENV[provider]} to its path`;
  throw new ShareError(`${provider} is not installed on this worker (looked for ${lookedFor})`);
}

/** The share's directory, fresh and private (0700): its sockets give control of the share. */
export async function createShareDir(dir: string): Promise<void> {
  await mkdir(join(dir, '..'), { recursive: true, mode: 0o700 });
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { mode: 0o700 });
  await chmod(dir, 0o700); // mkdir's mode is filtered by the umask
}

/**
 * Environment of a share's processes: the worker's (token already removed by the
 * caller), minus the variables that would make it look nested in a tmux, plus the
 * marker that finds every process of the share.
 */
export function shareEnvironment(base: Record<string, string | undefined>, dir: string): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...base, [SHARE_DIR_ENV]: dir };
  delete env.HANDOFF_WORKER_TOKEN;
  delete env.TMUX;
  delete env.TMUX_PANE;
  return env;
}

/** The argv of a tmux client attached to the run's session; `readOnly` ignores its keys. */
export function runAttachArgv(tmuxBin: string, runSocket: string, readOnly: boolean): string[] {
  return [tmuxBin, '-S', runSocket, 'attach', ...(readOnly ? ['-r'] : []), '-t', RUN_SESSION];
}

/** One `sh` command line that runs exactly `argv`, every word quoted. */
export function shellCommand(argv: readonly string[]): string {
  return argv.map(shellQuote).join(' ');
}

/** "relay host:port" for error messages (the port each provider defaults to when unset). */
export function relayLabel(provider: ExternalProvider, relay: ShareStart['relay']): string {
  if (!relay) return `${provider}'s default relay`;
  return `relay ${relay.host}:${relay.port ?? 22}`;
}

/** `15000` → "15s", `2500` → "2.5s": for messages an operator reads. */
export function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))}s`;
}

/** The last non-empty line of a program's stderr, short enough for a message. */
export function lastLine(text: string, max = 300): string {
  const line = text.split('\n').map((l) => l.trim()).filter(Boolean).pop() ?? '';
  return line.length > max ? `${line.slice(0, max)}…` : line;
}

/** Every live process of the share in `dir`, wherever it ended up (see SHARE_DIR_ENV). */
export function shareProcesses(dir: string) {
  return processesWithEnv(SHARE_DIR_ENV, dir);
}

/** Ends every process of the share in `dir` (SIGTERM, SIGKILL after `graceMs`) and removes the directory. */
export async function removeShare(dir: string, graceMs: number): Promise<void> {
  await reapProcesses(() => shareProcesses(dir), graceMs);
  await rm(dir, { recursive: true, force: true });
}
