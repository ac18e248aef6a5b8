import type { Logger } from './logger.js';
import type { TmuxControlClient } from './tmux-control-client.js';

export interface StatusLineOptions {
  /** The run's persistent tmux control client: a status change is a pipe write, not a tmux process. */
  tmux: Pick<TmuxControlClient, 'run'>;
  /** The run's tmux session. */
  session: string;
  logger: Logger;
  /** How long a flashed message stays, in ms. Default 10 000. */
  flashMs?: number;
}

/** Longest text shown on either side of the status line, in characters. */
const MAX_SIDE_CHARS = 160;

/**
 * The status line of a run's tmux session: the one place where the worker shows things
 * to everyone attached to the run's terminal (tmate/upterm viewers, an operator's tmux
 * client) without touching the pane — the pane's output is the agent's, recorded and
 * streamed byte for byte. Left: a persistent banner (the run is paused); right: the
 * latest operator message for a while. The line is off while there is nothing to show.
 * The window keeps its size (`window-size manual`), so turning the line on never resizes the pane.
 */
export class StatusLine {
  private readonly opts: StatusLineOptions;
  private readonly log: Logger;
  private banner: string | null = null;
  private message: string | null = null;
  private flashTimer: ReturnType<typeof setTimeout> | null = null;
  private disposed = false;

  constructor(opts: StatusLineOptions) {
    this.opts = opts;
    this.log = opts.logger;
  }

  /** Shows `text` on the left until replaced or cleared (null). */
  setBanner(text: string | null): Promise<void> {
    this.banner = text;
    return this.render();
  }

  /** Shows `text` on the right for `flashMs`; a newer flash replaces it. */
  flash(text: string): Promise<void> {
    this.message = text;
    if (this.flashTimer) clearTimeout(this.flashTimer);
    this.flashTimer = setTimeout(() => {
      this.flashTimer = null;
      this.message = null;
      void this.render();
    }, this.opts.flashMs ?? 10_000);
    this.flashTimer.unref();
    return this.render();
  }

  /** Stops updating (the run's tmux server is going away). */
  dispose(): void {
    this.disposed = true;
    if (this.flashTimer) clearTimeout(this.flashTimer);
    this.flashTimer = null;
  }

  /**
   * Sends the current state. The control client runs commands in the order written, so the
   * last state set is the one shown; a failure is logged, and the next change sends the whole
   * state again.
   */
  private render(): Promise<void> {
    if (this.disposed) return Promise.resolve();
    return this.opts.tmux.run(statusCommands(this.opts.session, this.banner, this.message)).catch((err: unknown) => {
      if (!this.disposed) this.log.warn({ error: (err as Error).message }, 'could not update the run’s status line');
    });
  }
}

/** The tmux commands that show `banner` and `message`. */
export function statusCommands(session: string, banner: string | null, message: string | null): string[][] {
  const set = (name: string, value: string) => ['set-option', '-t', session, name, value];
  if (banner === null && message === null) return [set('status', 'off')];
  return [
    set('status', 'on'),
    set('status-style', 'bg=colour236,fg=colour252'),
    set('status-left-length', String(MAX_SIDE_CHARS + 4)),
    set('status-right-length', String(MAX_SIDE_CHARS + 4)),
    // No window list: the banner says whose window is shown (the agent's, or a takeover's
    // operator shell); global, so every window of the run's private server has none.
    ['set-option', '-g', '-w', 'window-status-format', ''],
    ['set-option', '-g', '-w', 'window-status-current-format', ''],
    set('status-left', banner === null ? '' : `#[bg=colour160,fg=colour231,bold] ${statusText(banner)} #[default] `),
    set('status-right', message === null ? '' : `#[fg=colour229] ${statusText(message)} #[default] `),
  ];
}

/**
 * Makes untrusted text (an operator's name or message) safe to show in a tmux status
 * format: one line, no control characters, and nothing tmux would expand — `#` starts
 * formats, styles and `#(shell commands)`, `%` is strftime. A value ending in `;` would
 * be read by tmux as a command separator; callers always append a space after it.
 */
export function statusText(text: string): string {
  const oneLine = text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ').trim();
  const chars = Array.from(oneLine); // by code point: never split a surrogate pair
  const short = chars.length > MAX_SIDE_CHARS ? `${chars.slice(0, MAX_SIDE_CHARS - 1).join('')}…` : oneLine;
  return short.replaceAll('#', '##').replaceAll('%', '%%');
}
