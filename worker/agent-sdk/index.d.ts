/**
 * Handoff agent SDK — for an agent process running inside a Handoff run. Plain Node 20+,
 * no dependencies. Everything goes through files of the run directory whose paths the
 * worker puts in the run's environment; outside a run (those variables unset) every
 * function is a harmless no-op, so one agent works with and without Handoff.
 *
 * - `HANDOFF_CONTROL` — the desired control state ({@link ControlFile}), replaced atomically by the worker.
 * - `HANDOFF_INBOX` — JSON lines: operator messages ({@link OperatorMessage}) and hand-back packets ({@link HandoffPacket}).
 * - `HANDOFF_OUTBOX` — JSON lines the agent writes: `{type: 'request-operator', reason, ts}`.
 * - `checkpoint.json` next to the control file — written by {@link checkpoint} when it halts: `{seq, at, pid}`.
 *
 * The `handoff-agent` CLI (on the run's PATH) offers the same from a shell, and
 * `handoff-agent mcp` as Model Context Protocol tools over stdio (see README.md).
 */

/** Who drives the run: the agent, nobody (paused), or an operator who took it over. */
export type ControlState = 'agent' | 'paused' | 'operator';

/** The content of `$HANDOFF_CONTROL`. */
export interface ControlFile {
  /** Increases with every control change of the run. */
  seq: number;
  state: ControlState;
  /**
   * For `paused` and `operator`: how the agent is halted — `soft` waits for a checkpoint
   * (SIGSTOP if none comes within the grace), `hard` stops the run's processes (SIGSTOP) at once. Null for `agent`.
   */
  mode: 'soft' | 'hard' | null;
  /** For `paused` and `operator`: who paused or took over the run (absent when the hub named nobody). */
  by?: { id: string; name: string };
}

/** One operator message, as appended to `$HANDOFF_INBOX`. */
export interface OperatorMessage {
  /** When the operator sent it (ISO 8601). */
  ts: string;
  /** The operator's display name. */
  actor: string;
  /** The text, at most 4000 characters; may span several lines. */
  message: string;
}

/** Where the operator left the terminal, captured by the worker at hand-back. */
export interface HandoffContext {
  /**
   * The working directory of the operator's shell (the agent pane's when the worker never
   * opened one); null if it could not be read. Not applied to the agent: `chdir` there if it matters.
   */
  cwd: string | null;
  /**
   * The operator shell's exported environment at its last prompt (so an `export` the
   * operator typed counts), sorted by name. Secrets are redacted: secret-named variables
   * (`*_TOKEN`, `*_PASSWORD`, `API_KEY`, …) read `[REDACTED:env]`, secret-shaped parts of
   * other values `[REDACTED:<kind>]`. Not applied to the agent's own environment.
   */
  env: Record<string, string>;
  /** The run's newest terminal frame when the operator handed back: what they did is in the recording up to this frame. */
  scrollbackSeq: number;
  /** The commands the operator ran in their shell, in order (the newest 100; empty when no bash shell recorded them). */
  commands: OperatorCommand[];
  /** The run's recording on the hub (asciicast v2): `GET <hub>/api/task-runs/<runId>/recording.cast`. */
  recording: string;
}

/**
 * One command an operator ran during a takeover, from their shell's own history (recorded at
 * each prompt). The offsets are **byte offsets into the run's captured terminal output** (the
 * worker's `output.log`; the recording's frames carry the same bytes, in order): from the
 * prompt the command was typed at to the next prompt, so the range holds the typed line and
 * everything the command printed.
 */
export interface OperatorCommand {
  /** The command line as the shell's history holds it (at most 2000 characters; secrets redacted). */
  command: string;
  /** Its `$?` (0 success; 128+N killed by signal N). */
  exitStatus: number;
  /** Output bytes captured before the prompt it was typed at. */
  startOffset: number;
  /** Output bytes captured when the next prompt came. */
  endOffset: number;
}

/**
 * A hand-back packet: an operator who took over the run returns control to the agent. One
 * line of `$HANDOFF_INBOX` with `type: 'handoff'`, appended once per hand-back and before
 * the agent is resumed, so an agent leaving `checkpoint()` (or continued from SIGSTOP)
 * finds it already there.
 */
export interface HandoffPacket {
  type: 'handoff';
  /** When the operator handed back (ISO 8601). */
  ts: string;
  /** The operator's display name. */
  actor: string;
  /** The operator's user id. */
  actorId: string;
  /** What the operator did and what the agent should know (at most 4000 characters; secrets redacted). */
  summary: string;
  /** Present when an admin forced the hand-back: the operator whose takeover they ended (`actor` is the admin). */
  forcedFrom?: { id: string; name: string };
  /** Shared by the takeover, the hand-back and their audit events on the hub; null if none was given. */
  correlationId: string | null;
  context: HandoffContext;
}

/** One `$HANDOFF_INBOX` entry as {@link onInbox} delivers it. */
export type InboxEntry = ({ type: 'message' } & OperatorMessage) | HandoffPacket;

/** Where the SDK finds the run's files. Defaults: the `HANDOFF_*` environment variables. */
export interface PathOptions {
  /** Default `$HANDOFF_CONTROL`. */
  controlPath?: string;
  /** Default `$HANDOFF_INBOX`. */
  inboxPath?: string;
  /** Default `$HANDOFF_OUTBOX`. */
  outboxPath?: string;
}

export interface CheckpointOptions extends Pick<PathOptions, 'controlPath'> {
  /** Stops waiting: the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface SubscribeOptions extends Pick<PathOptions, 'inboxPath'> {
  /**
   * Deliver the entries already in the inbox too (synchronously, before the subscribe call
   * returns), then the new ones. Default true: an agent sees every message of its run once.
   */
  fromStart?: boolean;
  /** Keep the process alive while subscribed (e.g. a follower that does nothing else). Default false. */
  keepAlive?: boolean;
}

/** Name of the checkpoint marker file, in the directory of the control file. */
export declare const CHECKPOINT_FILE: 'checkpoint.json';

/** The desired control state, or null outside a run or before any control change. */
export declare function controlState(options?: Pick<PathOptions, 'controlPath'>): ControlFile | null;

/**
 * A safe place to pause. Resolves at once while the agent may run (control `agent`, or no
 * control file). While the run is paused or taken over, writes the checkpoint marker with
 * the seq it honours — so the worker reports the pause as soft (`paused-soft`) — and
 * resolves once control is back with the agent. Call it between steps; an agent that does
 * not reach one within the hub's soft-pause grace is stopped (SIGSTOP) instead.
 */
export declare function checkpoint(options?: CheckpointOptions): Promise<void>;

/**
 * Calls `cb` for each operator message in `$HANDOFF_INBOX` (not for hand-back packets),
 * in order. Messages never pause the run. Returns the function that unsubscribes.
 */
export declare function onMessage(cb: (message: OperatorMessage) => void, options?: SubscribeOptions): () => void;

/**
 * Calls `cb` for each hand-back packet in `$HANDOFF_INBOX`, in order. Returns the function
 * that unsubscribes. Each subscription follows the inbox on its own: a packet and a
 * message written around the same time may reach their callbacks in either order.
 */
export declare function onHandoff(cb: (packet: HandoffPacket) => void, options?: SubscribeOptions): () => void;

/**
 * Calls `cb` for every entry of `$HANDOFF_INBOX` in file order — operator messages (as
 * `{type: 'message', ts, actor, message}`) and hand-back packets — e.g. to show the run's
 * history. Returns the function that unsubscribes.
 */
export declare function onInbox(cb: (entry: InboxEntry) => void, options?: SubscribeOptions): () => void;

/**
 * Asks for a human: the run is flagged "needs operator" on every dashboard (and policy may
 * pause it). The hub keeps the first 2000 characters of `reason`. Resolves true once
 * written to `$HANDOFF_OUTBOX`, false outside a run. Rejects with a TypeError for an empty reason.
 */
export declare function requestOperator(reason: string, options?: Pick<PathOptions, 'outboxPath'>): Promise<boolean>;
