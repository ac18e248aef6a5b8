import { z } from 'zod';

function enumOf<T extends Record<string, string>>(obj: T) {
  return z.enum(Object.values(obj) as [T[keyof T], ...T[keyof T][]]);
}

/** Run lifecycle states (DESIGN.md §2 Run). */
export const RunStatus = {
  queued: 'queued',
  assigned: 'assigned',
  running: 'running',
  succeeded: 'succeeded',
  failed: 'failed',
  cancelled: 'cancelled',
  lost: 'lost',
} as const;
export type RunStatus = (typeof RunStatus)[keyof typeof RunStatus];
export const runStatusSchema = enumOf(RunStatus);
export const FINISHED_RUN_STATUSES: readonly RunStatus[] = ['succeeded', 'failed', 'cancelled', 'lost'];
export const ACTIVE_RUN_STATUSES: readonly RunStatus[] = ['assigned', 'running'];

/** Who drives a run's terminal. */
export const ControlState = { agent: 'agent', paused: 'paused', operator: 'operator' } as const;
export type ControlState = (typeof ControlState)[keyof typeof ControlState];
export const controlStateSchema = enumOf(ControlState);

/** Live session (terminal share) lifecycle. */
export const SessionStatus = {
  DISABLED: 'DISABLED',
  STARTING: 'STARTING',
  READY: 'READY',
  REVOKED: 'REVOKED',
  ENDED: 'ENDED',
  ERROR: 'ERROR',
} as const;
export type SessionStatus = (typeof SessionStatus)[keyof typeof SessionStatus];
export const sessionStatusSchema = enumOf(SessionStatus);
export const ACTIVE_SESSION_STATUSES: readonly SessionStatus[] = ['STARTING', 'READY'];

export const Provider = { web: 'web', tmate: 'tmate', upterm: 'upterm' } as const;
export type Provider = (typeof Provider)[keyof typeof Provider];
export const providerSchema = enumOf(Provider);

/** Roles, in increasing power: observer < operator < admin. */
export const Role = { observer: 'observer', operator: 'operator', admin: 'admin' } as const;
export type Role = (typeof Role)[keyof typeof Role];
export const roleSchema = enumOf(Role);
export const ROLE_RANK: Record<Role, number> = { observer: 0, operator: 1, admin: 2 };

export const ActorType = { operator: 'operator', worker: 'worker', agent: 'agent', system: 'system' } as const;
export type ActorType = (typeof ActorType)[keyof typeof ActorType];
export const actorTypeSchema = enumOf(ActorType);

export const AuditResult = { ok: 'ok', denied: 'denied', error: 'error', pending: 'pending' } as const;
export type AuditResult = (typeof AuditResult)[keyof typeof AuditResult];
export const auditResultSchema = enumOf(AuditResult);

export const GrantStatus = { active: 'active', revoked: 'revoked', expired: 'expired' } as const;
export type GrantStatus = (typeof GrantStatus)[keyof typeof GrantStatus];
export const grantStatusSchema = enumOf(GrantStatus);

export const ApprovalStatus = { pending: 'pending', approved: 'approved', denied: 'denied', expired: 'expired' } as const;
export type ApprovalStatus = (typeof ApprovalStatus)[keyof typeof ApprovalStatus];

/** A run's command: an argv vector (exec'd directly) or a shell script (run by `sh -c`). */
export const commandSchema = z.union([
  z.strictObject({ argv: z.array(z.string().min(1).max(4096)).min(1).max(256) }),
  z.strictObject({ script: z.string().min(1).max(65_536) }),
]);
export type Command = z.infer<typeof commandSchema>;

const isoDate = z.string();

export const liveSessionSchema = z.object({
  id: z.string(),
  /** Bumped by every change of the row (and, for a run, of its sessions and grants): clients apply only a newer revision. */
  revision: z.number().int().min(1),
  runId: z.string(),
  provider: providerSchema,
  status: sessionStatusSchema,
  workerId: z.string().nullable(),
  correlationId: z.string(),
  createdAt: isoDate,
  readyAt: isoDate.nullable(),
  endedAt: isoDate.nullable(),
  expiresAt: isoDate,
  graceWarnedAt: isoDate.nullable(),
  lastHeartbeatAt: isoDate.nullable(),
  endReason: z.string().nullable(),
  errorMessage: z.string().nullable(),
  /** Read-only attach data, visible to every authorized viewer. */
  attachRo: z.record(z.string(), z.string()).nullable(),
});
export type LiveSession = z.infer<typeof liveSessionSchema>;

/** A time-bound write grant: its grantee's dashboard input reaches the run's terminal (DESIGN.md §2). */
export const writeGrantSchema = z.object({
  id: z.string(),
  /** Bumped by every change of the row (and, for a run, of its sessions and grants): clients apply only a newer revision. */
  revision: z.number().int().min(1),
  runId: z.string(),
  /** The live session it was issued on (its RW attach data, if any, went to the grantee). */
  sessionId: z.string(),
  granteeId: z.string(),
  granteeName: z.string(),
  status: grantStatusSchema,
  createdAt: isoDate,
  expiresAt: isoDate,
  endedAt: isoDate.nullable(),
  /** Why it ended: `revoked`, `ttl`, `handback`, `session-ended`, `run-ended`. */
  endReason: z.string().nullable(),
  correlationId: z.string(),
});
export type WriteGrant = z.infer<typeof writeGrantSchema>;

export const runSchema = z.object({
  id: z.string(),
  /** Bumped by every change of the row (and, for a run, of its sessions and grants): clients apply only a newer revision. */
  revision: z.number().int().min(1),
  title: z.string(),
  command: commandSchema,
  cwd: z.string().nullable(),
  env: z.record(z.string(), z.string()),
  labels: z.record(z.string(), z.string()),
  status: runStatusSchema,
  createdBy: z.string(),
  /** The creator's user name (null if the user is gone). */
  createdByName: z.string().nullable(),
  workerId: z.string().nullable(),
  /** The worker's name (null until assigned, or if the worker is gone). */
  workerName: z.string().nullable(),
  exitCode: z.number().int().nullable(),
  errorMessage: z.string().nullable(),
  control: z.object({
    state: controlStateSchema,
    seq: z.number().int(),
    appliedSeq: z.number().int(),
    /** For `paused`: soft or hard, as requested. */
    mode: z.enum(['soft', 'hard']).nullable(),
    controllerId: z.string().nullable(),
    /** Who made the latest control change (the taker, while `operator`); null for the system. */
    by: z.object({ id: z.string(), name: z.string() }).nullable(),
  }),
  /** Live write grants on the run's terminal (no attach data: that goes to the grantee alone). */
  writeGrants: z.array(writeGrantSchema),
  needsOperator: z.object({ reason: z.string(), at: isoDate }).nullable(),
  liveSessionEnabled: z.boolean(),
  createdAt: isoDate,
  assignedAt: isoDate.nullable(),
  startedAt: isoDate.nullable(),
  endedAt: isoDate.nullable(),
  sessions: z.array(liveSessionSchema),
});
export type Run = z.infer<typeof runSchema>;

/** One user watching a run right now (all their dashboard connections to it, on every hub node). */
export const presenceViewerSchema = z.object({
  userId: z.string(),
  name: z.string(),
  role: roleSchema,
  /** When their earliest open connection started watching. */
  since: isoDate,
  /** Open run pages (tabs, devices) of this user on the run. */
  connections: z.number().int().min(1),
});
export type PresenceViewer = z.infer<typeof presenceViewerSchema>;

export const approvalSchema = z.object({
  id: z.string(),
  runId: z.string().nullable(),
  /** The policy action waiting for a decision, e.g. `session.create.external`. */
  action: z.string(),
  /** The command's parameters, replayed as the requester on approval. */
  params: z.record(z.string(), z.unknown()),
  requester: z.object({ id: z.string(), name: z.string(), role: z.string() }),
  approverRoles: z.array(z.string()),
  status: z.enum(['pending', 'approved', 'denied', 'expired']),
  createdAt: isoDate,
  expiresAt: isoDate,
  resolvedAt: isoDate.nullable(),
  resolvedBy: z.string().nullable(),
  /** The resolver's user name (null while pending, or when it expired). */
  resolvedByName: z.string().nullable(),
  reason: z.string().nullable(),
  /** After approval: what the replayed command returned (`{ok, result}` or `{ok: false, error}`). */
  outcome: z.unknown(),
});
export type ApprovalRequest = z.infer<typeof approvalSchema>;

/** How a pause halts the agent: at its next checkpoint, or SIGSTOP of its process group. */
export const pauseModeSchema = z.enum(['soft', 'hard']);
export type PauseMode = z.infer<typeof pauseModeSchema>;

export const operatorMessageSchema = z.object({
  id: z.string(),
  runId: z.string(),
  actorId: z.string(),
  actorName: z.string(),
  message: z.string(),
  createdAt: isoDate,
  /** When the worker acknowledged it (appended to the run's inbox); null until then. */
  deliveredAt: isoDate.nullable(),
});
export type OperatorMessage = z.infer<typeof operatorMessageSchema>;

/** Most commands a hand-back lists (the newest ones), and most characters of each command line. */
export const HANDOFF_MAX_COMMANDS = 100;
export const HANDOFF_MAX_COMMAND_CHARS = 2000;

/**
 * One command an operator ran in their takeover shell, from the shell's own history.
 * Offsets are byte offsets into the run's captured output (`output.log` on the worker,
 * the text the recording's frames carry, in order): from the prompt the command was typed
 * at to the next prompt, so the range holds the typed line and everything it printed.
 * As seen by the shell at its prompts: tmux's capture may trail it by a few milliseconds.
 */
export const operatorCommandSchema = z.object({
  /** The command line as typed (history expansion applied; secrets redacted). */
  command: z.string().max(HANDOFF_MAX_COMMAND_CHARS),
  /** `$?` when the command finished (128+N: killed by signal N). */
  exitStatus: z.number().int().min(0).max(255),
  /** Output bytes captured before the prompt it was typed at. */
  startOffset: z.number().int().min(0),
  /** Output bytes captured when the next prompt came (its output ends here). */
  endOffset: z.number().int().min(0),
});
export type OperatorCommand = z.infer<typeof operatorCommandSchema>;

/** What the worker captured when an operator handed a run back to its agent. */
export const handoffContextSchema = z.object({
  /** The working directory of the operator's pane at hand-back; null if it could not be read. */
  cwd: z.string().max(4096).nullable(),
  /** The operator shell's environment, secrets redacted (`[REDACTED:<kind>]`). */
  env: z.record(z.string().max(256), z.string().max(8192)),
  /** Scrollback reference: the last terminal frame seq before the hand-back (into the recording). */
  scrollbackSeq: z.number().int().min(0),
  /** The commands the operator ran in their shell, in order (the newest HANDOFF_MAX_COMMANDS); empty from workers that predate it. */
  commands: z.array(operatorCommandSchema).max(HANDOFF_MAX_COMMANDS).default([]),
});
export type HandoffContext = z.infer<typeof handoffContextSchema>;
