import { AppError, ErrorCode, type Clock, type ExternalProvider, type ShareStart } from '@handoff/shared';
import type { HubLink } from './hub-link.js';
import type { Logger } from './logger.js';
import {
  ShareError,
  relayLabel,
  runSocketOf,
  shareDirOf,
  type ShareContext,
  type ShareProvider,
} from './share-provider.js';
import { ShareReporter } from './share-reporter.js';
import { cleanStaleShares } from './stale-shares.js';
import { TmateProvider } from './tmate-provider.js';
import { tmux } from './tmux.js';
import { UptermProvider } from './upterm-provider.js';

export interface ShareManagerOptions {
  /** WORKER_RUN_DIR: runs live in `<runsDir>/<runId>/`, shares in `<runsDir>/shares/<sessionId>/`. */
  runsDir: string;
  /** Absolute path of tmux (known once the worker started). */
  tmuxBin: () => string;
  /** TMATE_BIN / UPTERM_BIN; unset → found on PATH when a share starts. */
  binaries: { tmate?: string | undefined; upterm?: string | undefined };
  /** Environment of share processes: the worker's, without its token. */
  env: Record<string, string | undefined>;
  link: HubLink;
  logger: Logger;
  /** Whether the run is running on this worker (its tmux server is up). */
  isRunActive: (runId: string) => boolean;
  /** Delay before resending an unacknowledged report, in ms. Default 2000. */
  retryMs?: number;
  /** Owns the report retry timers. Default `systemClock`. */
  clock?: Clock;
  /** Stop: ms between SIGTERM and SIGKILL of a share's processes. Default 1000. */
  killGraceMs?: number;
  /** Builds a share's provider. Default: `TmateProvider` / `UptermProvider`. */
  createProvider?: (provider: ExternalProvider, ctx: ShareContext) => ShareProvider;
}

interface ShareEntry {
  readonly sessionId: string;
  readonly runId: string;
  readonly provider: ExternalProvider;
  readonly share: ShareProvider;
  readonly log: Logger;
  readonly reporter: ShareReporter;
  /** `dead`: the share failed or died and its failure report is on its way to the hub. */
  phase: 'starting' | 'ready' | 'stopping' | 'dead';
  stopped: Promise<void> | null;
}

/** Session ids remembered after their share ended, so a re-pushed start cannot start it twice. */
const REMEMBERED = 1024;
const UNEXPECTED_EXIT = 'share process exited unexpectedly';

/**
 * The external shares (tmate, upterm) of this worker's runs: starts them when the hub
 * asks, reports `share:ready` / `share:failed` reliably (resent after a reconnect until
 * acknowledged), notices a share process dying, stops shares on `share:stop`, with their
 * run, and when the worker stops. A share is never part of its run: stopping one only
 * detaches a tmux client from the run.
 */
export class ShareManager {
  private readonly opts: ShareManagerOptions;
  private readonly log: Logger;
  private readonly entries = new Map<string, ShareEntry>();
  private readonly finished = new Set<string>();
  private readonly stops = new Set<Promise<void>>();
  private readonly createProvider: (provider: ExternalProvider, ctx: ShareContext) => ShareProvider;
  private closed = false;

  constructor(opts: ShareManagerOptions) {
    this.opts = opts;
    this.log = opts.logger.child({ module: 'shares' });
    this.createProvider =
      opts.createProvider ??
      ((provider, ctx) =>
        provider === 'tmate' ? new TmateProvider({ ...ctx, bin: opts.binaries.tmate }) : new UptermProvider({ ...ctx, bin: opts.binaries.upterm }));
  }

  /** Session ids of the shares whose processes are starting or up (for `worker:heartbeat`). */
  get aliveSessionIds(): string[] {
    return [...this.entries.values()].filter((e) => e.phase === 'starting' || e.phase === 'ready').map((e) => e.sessionId);
  }

  /** Removes what a crashed predecessor left in the shares directory. Call before taking work. */
  cleanStale(): Promise<number> {
    return cleanStaleShares(this.opts.runsDir, { tmateBin: this.opts.binaries.tmate, pathVar: this.opts.env.PATH }, this.log);
  }

  /**
   * `share:start` (parsed by on.ts): accepted → returns at once (the ok ack), then reports
   * `share:ready` or `share:failed`; refused → throws the error the hub gets.
   */
  start(request: ShareStart): Record<string, never> {
    if (this.entries.has(request.sessionId) || this.finished.has(request.sessionId)) {
      // Re-pushed (e.g. after a reconnect): the one share of this session already exists or existed.
      this.log.debug({ sessionId: request.sessionId }, 'share already known; start ignored');
      return {};
    }
    if (this.closed) throw new AppError({ code: ErrorCode.UNAVAILABLE, message: 'worker is shutting down' });
    if (!this.opts.isRunActive(request.runId)) {
      this.log.warn({ sessionId: request.sessionId, runId: request.runId }, 'share requested for a run that is not running here');
      throw new AppError({ code: ErrorCode.NOT_FOUND, message: `run ${request.runId} is not running on this worker` });
    }
    void this.startShare(request);
    return {};
  }

  /** `share:stop` (parsed by on.ts): kills the share now. Nothing is reported: the hub already ended the session. */
  stop({ sessionId, reason }: { sessionId: string; reason: string }): void {
    const entry = this.entries.get(sessionId);
    if (!entry) {
      this.log.debug({ sessionId }, 'share:stop for a share this worker does not have');
      return;
    }
    void this.stopEntry(entry, reason);
  }

  /** The run ended: its shares go with it (the hub ends their sessions with the run). */
  async stopRun(runId: string): Promise<void> {
    await Promise.all([...this.entries.values()].filter((e) => e.runId === runId).map((e) => this.stopEntry(e, 'run ended')));
  }

  /** Worker shutdown: stops every share and refuses new ones. */
  async stopAll(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.entries.values()].map((e) => this.stopEntry(e, 'worker stopping')));
    await Promise.all([...this.stops]);
  }

  /** After a (re)connect: send every unacknowledged share report again. */
  resend(): void {
    for (const entry of this.entries.values()) entry.reporter.resend();
  }

  private async startShare(request: ShareStart): Promise<void> {
    const { sessionId, runId, provider } = request;
    const log = this.opts.logger.child({ module: 'share', sessionId, runId, provider });
    const share = this.createProvider(provider, {
      sessionId,
      runId,
      dir: shareDirOf(this.opts.runsDir, sessionId),
      runSocket: runSocketOf(this.opts.runsDir, runId),
      tmuxBin: this.opts.tmuxBin(),
      env: this.opts.env,
      logger: log,
      killGraceMs: this.opts.killGraceMs,
    });
    const reporter = new ShareReporter({
      sessionId,
      link: this.opts.link,
      logger: log,
      retryMs: this.opts.retryMs,
      clock: this.opts.clock,
      onSettled: () => this.forget(entry),
    });
    const entry: ShareEntry = { sessionId, runId, provider, share, log, reporter, phase: 'starting', stopped: null };
    this.entries.set(sessionId, entry);
    share.onExit(() => void this.onShareExit(entry));
    log.info({ relay: relayLabel(provider, request.relay), allowWeb: request.allowWeb, timeoutMs: request.timeoutMs }, 'starting share');

    try {
      const { attachRo, attachRw } = await share.start({ relay: request.relay, allowWeb: request.allowWeb, timeoutMs: request.timeoutMs });
      if (entry.phase !== 'starting') return; // stopped meanwhile
      entry.phase = 'ready';
      // Only that it is ready (and which keys it has): attach data, RW above all, never reaches a log line.
      log.info({ attachRoKeys: Object.keys(attachRo) }, 'share ready');
      entry.reporter.ready(attachRo, attachRw);
    } catch (err) {
      if (entry.phase !== 'starting') return;
      entry.phase = 'dead';
      if (!(err instanceof ShareError)) log.error({ err }, 'share failed unexpectedly');
      const message = err instanceof ShareError ? err.message : `the ${provider} share failed on the worker`;
      log.warn({ reason: message }, 'share failed to start');
      entry.reporter.failed(message);
    }
  }

  private async onShareExit(entry: ShareEntry): Promise<void> {
    if (entry.phase !== 'ready') return;
    entry.phase = 'dead';
    const runUp = await this.runStillUp(entry.runId);
    if (entry.phase !== 'dead') return; // stopped meanwhile
    if (!runUp) {
      // The run's tmux server went first, taking the share's client with it: the run
      // ended, and the hub ends its sessions when the run's exit arrives.
      entry.log.info('share ended with its run');
      entry.reporter.dispose();
      this.forget(entry);
      return;
    }
    entry.log.warn(UNEXPECTED_EXIT);
    entry.reporter.failed(UNEXPECTED_EXIT);
  }

  private async runStillUp(runId: string): Promise<boolean> {
    if (!this.opts.isRunActive(runId)) return false;
    const probe = await tmux(this.opts.tmuxBin(), runSocketOf(this.opts.runsDir, runId), ['has-session', '-t', 'run'], { timeoutMs: 5000 });
    return probe.code === 0;
  }

  private stopEntry(entry: ShareEntry, reason: string): Promise<void> {
    if (entry.stopped) return entry.stopped;
    entry.phase = 'stopping';
    entry.reporter.dispose();
    const stopped = (async () => {
      try {
        await entry.share.stop();
        entry.log.info({ reason }, 'share stopped');
      } catch (err) {
        entry.log.error({ err }, 'share did not stop cleanly');
      } finally {
        this.forget(entry);
      }
    })();
    entry.stopped = stopped;
    this.stops.add(stopped);
    void stopped.finally(() => this.stops.delete(stopped));
    return stopped;
  }

  private forget(entry: ShareEntry): void {
    if (this.entries.get(entry.sessionId) === entry) this.entries.delete(entry.sessionId);
    this.finished.add(entry.sessionId);
    if (this.finished.size > REMEMBERED) this.finished.delete(this.finished.values().next().value!);
  }
}
