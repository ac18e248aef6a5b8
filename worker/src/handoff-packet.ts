import { HANDOFF_MAX_COMMAND_CHARS, HANDOFF_MAX_COMMANDS, redactEnv, redactText, type ControlApply, type HandoffContext, type OperatorCommand } from '@handoff/shared';

/** What the worker read from the terminal at hand-back, before redaction. */
export interface CapturedContext {
  /** The operator pane's working directory (the agent's, when no operator shell was open); null if unreadable. */
  cwd: string | null;
  /** The shell's environment as it was (secrets included: never log it). */
  env: Record<string, string>;
  /** The commands the operator ran, in order, as the shell recorded them (secrets included); absent without an operator shell. */
  commands?: OperatorCommand[];
}

/** The hand-back packet: one `{"type":"handoff",…}` line of `$HANDOFF_INBOX` (see agent-sdk/index.d.ts `HandoffPacket`). */
export interface HandoffPacket {
  type: 'handoff';
  /** When the operator handed back (ISO 8601). */
  ts: string;
  /** The operator's display name and id. */
  actor: string;
  actorId: string;
  /** What the operator did and what the agent should know (secrets redacted). */
  summary: string;
  /** A forced hand-back: the operator whose takeover `actor` (an admin) ended. */
  forcedFrom?: { id: string; name: string };
  /** Shared by the takeover, the hand-back and their audit events; null when the hub gave none. */
  correlationId: string | null;
  context: HandoffContext & {
    /** Where the run's recording (asciicast v2) is exported; `scrollbackSeq` is a frame of it. */
    recording: string;
  };
}

// The bounds of `handoffContextSchema` (shared): a context the hub would refuse must never leave.
const MAX_CWD_CHARS = 4096;
const MAX_NAME_CHARS = 256;
const MAX_VALUE_CHARS = 8192;
/** Characters of names and values kept in all: the report must stay a small socket message. */
const MAX_ENV_CHARS = 64 * 1024;

/**
 * The context as it leaves the worker (in the packet and in `control:applied`): the env
 * redacted (secret-named variables wholesale, secret-shaped values in place), then bounded
 * to what the wire accepts — redaction first, so a cut never hides a secret from it.
 * Variables come sorted by name; what does not fit is left out, never cut in the middle
 * of a name. Commands are redacted and cut the same way, the newest kept. Returns how many
 * variables and commands were left out too.
 */
export function handoffContext(captured: CapturedContext, scrollbackSeq: number): { context: HandoffContext; omitted: number } {
  const redacted = redactEnv(captured.env);
  const env: Record<string, string> = {};
  let chars = 0;
  let omitted = 0;
  for (const name of Object.keys(redacted).sort()) {
    const full = redacted[name]!;
    const value = full.length > MAX_VALUE_CHARS ? `${full.slice(0, MAX_VALUE_CHARS - 1)}…` : full;
    if (name.length > MAX_NAME_CHARS || chars + name.length + value.length > MAX_ENV_CHARS) {
      omitted += 1;
      continue;
    }
    Object.defineProperty(env, name, { value, enumerable: true, writable: true, configurable: true });
    chars += name.length + value.length;
  }
  const cwd = captured.cwd !== null && captured.cwd.length <= MAX_CWD_CHARS ? captured.cwd : null;
  // The newest ones: what the operator did last matters most to the agent that goes on.
  const all = captured.commands ?? [];
  const commands = all.slice(-HANDOFF_MAX_COMMANDS).map((c) => {
    const command = redactText(c.command);
    return { ...c, command: command.length > HANDOFF_MAX_COMMAND_CHARS ? `${command.slice(0, HANDOFF_MAX_COMMAND_CHARS - 1)}…` : command };
  });
  omitted += all.length - commands.length;
  return { context: { cwd, env, scrollbackSeq: Math.max(0, Math.floor(scrollbackSeq)), commands }, omitted };
}

/** A hand-back as the hub sends it in `control:apply`. */
export type Handback = NonNullable<ControlApply['handback']>;

/** The packet for a hand-back of run `runId`. */
export function handoffPacket(runId: string, handback: Handback, correlationId: string | null, context: HandoffContext): HandoffPacket {
  return {
    type: 'handoff',
    ts: handback.at,
    actor: handback.by.name,
    actorId: handback.by.id,
    summary: redactText(handback.summary),
    ...(handback.forcedFrom ? { forcedFrom: handback.forcedFrom } : {}),
    correlationId,
    context: { ...context, recording: `/api/task-runs/${runId}/recording.cast` },
  };
}
