import { z } from 'zod';
import type { AckCallback } from './errors.js';
import { approvalSchema, commandSchema, controlStateSchema, handoffContextSchema, liveSessionSchema, operatorMessageSchema, pauseModeSchema, presenceViewerSchema, runSchema, writeGrantSchema } from './domain.js';

/** External share providers run by the worker (the `web` provider lives in the hub). */
export const externalProviderSchema = z.enum(['tmate', 'upterm']);
export type ExternalProvider = z.infer<typeof externalProviderSchema>;

/** What the hub asks a worker to start: one share process group attached to a run's tmux session. */
export const shareStartSchema = z.object({
  sessionId: z.uuid(),
  runId: z.uuid(),
  provider: externalProviderSchema,
  /** Self-hosted relay (LIVE_RELAY_HOST/PORT); null → the provider's default. */
  relay: z
    .object({
      host: z.string(),
      port: z.number().int().nullable(),
      /** Host-key fingerprints of a self-hosted tmate relay (written to the share's config file). */
      fingerprints: z.object({ rsa: z.string().optional(), ed25519: z.string().optional() }).default({}),
    })
    .nullable(),
  /** Include tmate web links (LIVE_ALLOW_WEB). */
  allowWeb: z.boolean(),
  /** Give up (and report failure) after this many ms (LIVE_PROVIDER_START_TIMEOUT). */
  timeoutMs: z.number().int().min(1),
});
export type ShareStart = z.infer<typeof shareStartSchema>;

/** The desired control state of a run, pushed to its worker (and re-pushed on reconnect). */
export const controlApplySchema = z.object({
  runId: z.uuid(),
  /** Increases by one per control change of the run; the worker applies each seq once. */
  seq: z.number().int().min(1),
  state: controlStateSchema,
  /** For `paused`: soft (wait for the agent's checkpoint) or hard (SIGSTOP at once). */
  mode: pauseModeSchema.nullable(),
  /** Soft pause escalates to hard after this many ms without a checkpoint (PAUSE_SOFT_GRACE). */
  softGraceMs: z.number().int().min(0),
  /** Who asked for it: shown in the terminal's banner (the operator who took over). */
  by: z.object({ id: z.string(), name: z.string() }).nullable(),
  /** The control change's correlation id (a takeover and its hand-back share one). */
  correlationId: z.uuid().optional(),
  /** When the hub recorded the change (hub clock, ms since the epoch): echoed in `control:applied`. */
  changedAt: z.number().int().optional(),
  /**
   * With `state: agent` after a takeover: the operator hands the run back. The worker
   * captures the context, appends the hand-back packet to the inbox, then resumes the agent.
   */
  handback: z
    .object({
      summary: z.string().min(1).max(4000),
      by: z.object({ id: z.string(), name: z.string() }),
      /** When the operator handed back (ISO 8601). */
      at: z.string(),
      /** A forced hand-back: the operator whose takeover `by` ended (absent when the controller handed back). */
      forcedFrom: z.object({ id: z.string(), name: z.string() }).optional(),
    })
    .nullable()
    .default(null),
});
export type ControlApply = z.infer<typeof controlApplySchema>;

/** An operator message for the run's agent: appended to $HANDOFF_INBOX and shown in the status line. */
export const runMessageSchema = z.object({
  runId: z.uuid(),
  messageId: z.uuid(),
  ts: z.string(),
  actor: z.string(),
  message: z.string().max(4000),
});
export type RunMessage = z.infer<typeof runMessageSchema>;

/** Keystrokes for a run's terminal from an operator holding a live write grant (≤ 4 KiB a frame). */
export const termInputSchema = z.strictObject({
  runId: z.uuid(),
  data: z.string().min(1).max(4096),
});
export type TermInput = z.infer<typeof termInputSchema>;

/** Attach strings reported by a share: RO ones are shown to viewers, RW ones only to a grantee. */
export const attachDataSchema = z.record(z.string().max(100), z.string().max(2000));

/** One batch of terminal output of a run. `seq` increases by 1 per frame, per run, from 1. */
export const frameSchema = z.strictObject({
  seq: z.number().int().min(1),
  /** Milliseconds since the run started (for the recording). */
  t: z.number().int().min(0),
  data: z.string().max(256 * 1024),
});
export type Frame = z.infer<typeof frameSchema>;

const runRef = z.strictObject({ runId: z.uuid() });

/** Why a viewer was removed from a run (pushed to them, and the text of the FORBIDDEN that keeps them out). */
export const presenceKickedSchema = z.object({
  runId: z.string(),
  by: z.object({ id: z.string(), name: z.string() }),
  reason: z.string().nullable(),
  /** ISO 8601: when they may watch the run again. */
  until: z.string(),
});
export type PresenceKicked = z.infer<typeof presenceKickedSchema>;

/** A run's pane as its worker started it: what a recording's player needs to render its bytes. */
export const paneInfoSchema = z.strictObject({
  /** Columns × rows of the pane (the window never resizes: `window-size manual`). */
  cols: z.number().int().min(1).max(1000),
  rows: z.number().int().min(1).max(500),
  /** TERM inside the pane, e.g. `screen-256color`. */
  term: z.string().regex(/^[A-Za-z0-9._+-]{1,64}$/),
  /** The shell that starts the run's command, e.g. `/bin/sh`. */
  shell: z.string().regex(/^\/[A-Za-z0-9._/+-]{0,199}$/),
});
export type PaneInfo = z.infer<typeof paneInfoSchema>;

/** What the hub pushes to a worker when it assigns it a run. */
export const runAssignmentSchema = z.object({
  /** A uuid: it also names the run's directory on the worker. */
  runId: z.uuid(),
  command: commandSchema,
  cwd: z.string().nullable(),
  env: z.record(z.string(), z.string()),
});
export type RunAssignment = z.infer<typeof runAssignmentSchema>;

/**
 * Socket events, declared once. Each client→server event has a payload schema and
 * a response schema (the `data` of an ok ack); server→client events have a payload schema.
 */
export const workerClientEvents = {
  /** First message after connecting: capacity and the runs the worker still has. */
  'worker:hello': {
    payload: z.strictObject({
      capacity: z.number().int().min(1).max(256),
      runs: z.array(z.uuid()).max(256),
      version: z.string().max(50),
    }),
    response: z.object({
      workerId: z.string(),
      name: z.string(),
      heartbeatIntervalMs: z.number(),
      /** WORKER_LOST_AFTER + WORKER_RECLAIM_GRACE, ms: a run whose worker is silent this long is lost (the worker's dead-man switch stops it). */
      abandonAfterMs: z.number().int().min(1),
      /**
       * One entry per run listed in the hello: `keep` — the hub still has it as this worker's
       * (re-adopt it and resend frames after `lastSeq`, the highest seq recorded); otherwise
       * stop it (the hub gave up on it, or it belongs to another worker): a `run:cancel` follows.
       */
      runs: z.array(z.object({ runId: z.string(), keep: z.boolean(), lastSeq: z.number().int().min(0) })),
    }),
  },
  'worker:heartbeat': {
    payload: z.strictObject({
      activeRuns: z.number().int().min(0).max(256),
      /** Session ids of the share processes alive on this worker. */
      shares: z.array(z.uuid()).max(1024).default([]),
    }),
    response: z.object({}),
  },
  /** A share started: its attach data (e.g. tmate_ssh_ro / tmate_ssh). */
  'share:ready': {
    payload: z.strictObject({ sessionId: z.uuid(), attachRo: attachDataSchema, attachRw: attachDataSchema }),
    response: z.object({}),
  },
  /** The worker applied a control change (`effective` says how a pause took hold). */
  'control:applied': {
    payload: z.strictObject({
      runId: z.uuid(),
      seq: z.number().int().min(1),
      effective: z.enum(['agent', 'paused-soft', 'paused-hard', 'operator']),
      /** Worker clock, ms since the epoch. */
      appliedAt: z.number().int(),
      /** After a hand-back: what the worker captured and put in the agent's hand-back packet. */
      handoff: handoffContextSchema.optional(),
      /**
       * The push's `changedAt` and `correlationId`, echoed: the hub records a report that names
       * the run's current change in one statement (checked against the row, never trusted).
       */
      changedAt: z.number().int().optional(),
      correlationId: z.uuid().optional(),
    }),
    response: z.object({}),
  },
  /** The agent asked for a human (SDK requestOperator / `handoff-agent request-operator`). */
  'run:needs-operator': {
    payload: z.strictObject({ runId: z.uuid(), reason: z.string().min(1).max(2000) }),
    response: z.object({}),
  },
  /** A share could not start, or its process died: an operator-readable reason. */
  'share:failed': {
    payload: z.strictObject({ sessionId: z.uuid(), message: z.string().min(1).max(2000) }),
    response: z.object({}),
  },
  /** The run's process started in its tmux server. */
  /**
   * The run's process started. `sinceMs`: milliseconds since the origin of the run's frame
   * clock (frames' `t` count from it) when the report was sent; the hub dates the start there,
   * so audit rows and recording frames share one time base. Bounded: at most one day.
   */
  'run:started': {
    payload: z.strictObject({ runId: z.uuid(), pane: paneInfoSchema.optional(), sinceMs: z.number().int().min(0).max(86_400_000).optional() }),
    response: z.object({}),
  },
  /** Terminal output frames (possibly several after a reconnect), acked once persisted. */
  'run:output': {
    payload: z.strictObject({ runId: z.uuid(), frames: z.array(frameSchema).min(1).max(1000) }),
    response: z.object({ lastSeq: z.number().int() }),
  },
  /** The run's process exited (or failed to start: exitCode null, error set). */
  'run:exited': {
    payload: z.strictObject({
      runId: z.uuid(),
      exitCode: z.number().int().nullable(),
      error: z.string().max(2000).optional(),
    }),
    response: z.object({}),
  },
} as const;

export const workerServerEvents = {
  /** A queued run pushed to this worker; the worker acks `{ok: true, data: {}}` to accept it (docs/protocol.md §3). */
  'run:assign': { payload: runAssignmentSchema, ack: z.object({}) },
  /** Stop this run's process tree now. */
  'run:cancel': { payload: z.object({ runId: z.uuid() }) },
  /** Start an external share of a run; the worker acks at once, then reports share:ready or share:failed. */
  'share:start': { payload: shareStartSchema, ack: z.object({}) },
  /** Apply this control state (idempotent by seq); ack once applied (then control:applied follows for soft pauses). */
  'control:apply': { payload: controlApplySchema, ack: z.object({}) },
  /** Deliver an operator message; ack once it is in the inbox. */
  'run:message': { payload: runMessageSchema, ack: z.object({}) },
  /** Type into the run's terminal (the operator's pane during a takeover); ack once tmux took the keys. */
  'term:input': { payload: termInputSchema, ack: z.object({}) },
  /** Kill a share's process group now (revoke, expiry, run end, rotation). Never touches the run. */
  'share:stop': { payload: z.object({ sessionId: z.uuid(), reason: z.string() }) },
} as const;

export const dashboardClientEvents = {
  /** Join the `runs` room: live run list updates. */
  'runs:subscribe': { payload: z.strictObject({}), response: z.object({}) },
  /** Join `run:<id>`: that run's status, control and session events. */
  'run:subscribe': { payload: runRef, response: z.object({ run: runSchema }) },
  'run:unsubscribe': { payload: runRef, response: z.object({}) },
  /**
   * Join `run:<id>:term` and get the scrollback: every frame with seq > `afterSeq`
   * (or the recent tail when absent). Live `term:frame`s follow; dedupe by seq.
   */
  'term:subscribe': {
    payload: z.strictObject({
      runId: z.uuid(),
      afterSeq: z.number().int().min(0).optional(),
      /** At most this many of the newest frames of the scrollback (a wall tile needs a screenful, not the hub's whole tail); `truncated` says when older ones were left out. 1–2000. */
      tailFrames: z.number().int().min(1).max(2000).optional(),
    }),
    response: z.object({ frames: z.array(frameSchema), truncated: z.boolean() }),
  },
  'term:unsubscribe': { payload: runRef, response: z.object({}) },
  /**
   * Keystrokes for the run's terminal. Only the holder of a live write grant may type;
   * anyone else gets FORBIDDEN (audited). Rate-limited per socket.
   */
  'term:input': { payload: termInputSchema, response: z.object({}) },
  /** Join the `approvals` room: approval requests and their resolutions, live. */
  'approvals:subscribe': { payload: z.strictObject({}), response: z.object({}) },
} as const;

export const dashboardServerEvents = {
  'run:updated': { payload: runSchema },
  /** A live session changed (to the run room and `runs`: the list shows each share). */
  'session:updated': { payload: liveSessionSchema },
  /** An operator message, to every dashboard in the run room. */
  'message:created': { payload: operatorMessageSchema },
  /** A message changed: the worker acknowledged it (`deliveredAt` set). */
  'message:updated': { payload: operatorMessageSchema },
  /** The agent asked for an operator (to `runs` and the run room). */
  'run:needs-operator': { payload: z.object({ runId: z.string(), reason: z.string(), at: z.string() }) },
  /** An approval request was created or resolved (to `approvals`). */
  'approval:updated': { payload: approvalSchema },
  /** A write grant was created or ended (to the run room; never carries attach data). */
  'grant:updated': { payload: writeGrantSchema },
  /** Pushed once per session at LIVE_GRACE before it expires. */
  'session:grace': { payload: z.object({ sessionId: z.string(), runId: z.string(), expiresAt: z.string() }) },
  /** Live viewing of a run ended for everyone in `run:<id>:term` (revoked or expired); they were removed from the room. */
  'term:closed': { payload: z.object({ runId: z.string(), reason: z.string() }) },
  /** Live terminal frames of a run (to `run:<id>:term`). */
  'term:frame': { payload: z.object({ runId: z.string(), frames: z.array(frameSchema) }) },
  /**
   * To one dashboard that was lagging (its queue past VIEWER_MAX_QUEUED_BYTES) and drained:
   * live frames skipped it meanwhile. It resyncs every terminal it follows (`term:subscribe`
   * from the last seq it has) — a gap is not always followed by a frame that would show it
   * (a run's last output, then silence).
   */
  'term:resume': { payload: z.object({}) },
  /** Who watches the run now (to the run room, on every join, leave, kick or expiry). */
  'presence:updated': { payload: z.object({ runId: z.string(), viewers: z.array(presenceViewerSchema) }) },
  /**
   * To the kicked user's sockets only: an operator removed them from the run. They left its
   * rooms; `run:subscribe` and `term:subscribe` of the run answer FORBIDDEN until `until`.
   */
  'presence:kicked': { payload: presenceKickedSchema },
} as const;

type ClientEventTable = Record<string, { payload: z.ZodType; response: z.ZodType }>;
type ServerEventTable = Record<string, { payload: z.ZodType; ack?: z.ZodType }>;

/** socket.io `ListenEvents` derived from a client event table: `(payload, ack) => void`. */
export type ListenEventsOf<T extends ClientEventTable> = {
  [K in keyof T]: (payload: z.infer<T[K]['payload']>, ack: AckCallback<z.infer<T[K]['response']>>) => void;
};
/** socket.io `EmitEvents` derived from a server event table. */
export type EmitEventsOf<T extends ServerEventTable> = {
  [K in keyof T]: T[K] extends { ack: z.ZodType }
    ? (payload: z.infer<T[K]['payload']>, ack: AckCallback<z.infer<T[K]['ack']>>) => void
    : (payload: z.infer<T[K]['payload']>) => void;
};

export type WorkerClientEvents = typeof workerClientEvents;
export type DashboardClientEvents = typeof dashboardClientEvents;
export type WorkerToHub = ListenEventsOf<WorkerClientEvents>;
export type HubToWorker = EmitEventsOf<typeof workerServerEvents>;
export type DashboardToHub = ListenEventsOf<DashboardClientEvents>;
export type HubToDashboard = EmitEventsOf<typeof dashboardServerEvents>;
export type EventResponse<T extends ClientEventTable, K extends keyof T> = z.infer<T[K]['response']>;

/** Room names (DESIGN.md §3). */
export const rooms = {
  runs: 'runs',
  run: (runId: string) => `run:${runId}`,
  term: (runId: string) => `run:${runId}:term`,
  worker: (workerId: string) => `worker:${workerId}`,
  approvals: 'approvals',
  /** Dashboards whose outgoing queue is over the bound: live terminal frames skip them (they resync). */
  lagging: 'lagging',
  /** Every socket that authenticated with one token (a revoke or expiry disconnects them). */
  token: (tokenId: string) => `token:${tokenId}`,
} as const;

export const NAMESPACE = { dashboard: '/dashboard', worker: '/worker' } as const;
