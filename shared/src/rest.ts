import { z } from 'zod';
import { approvalSchema, commandSchema, controlStateSchema, operatorMessageSchema, pauseModeSchema, liveSessionSchema, providerSchema, runSchema, runStatusSchema, writeGrantSchema } from './domain.js';
import { textProblem } from './text-safety.js';

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'must be an environment variable name');
const labelKey = z.string().regex(/^[a-z0-9][a-z0-9._/-]{0,62}$/, 'must be a lowercase label key');

/** `POST /api/task-runs` body. */
export const createRunBodySchema = z.strictObject({
  command: commandSchema,
  /** Display title (one line); defaults to the command. */
  title: singleLineText(200).optional(),
  /** Working directory on the worker (absolute). */
  cwd: z.string().startsWith('/').max(4096).optional(),
  /** Non-secret environment for the run. */
  env: z.record(envName, z.string().max(8192)).refine((e) => Object.keys(e).length <= 100, 'at most 100 entries').optional(),
  labels: z.record(labelKey, oneLine(200)).refine((l) => Object.keys(l).length <= 32, 'at most 32 labels').optional(),
  /** Start a `web` live session when the run starts. Default LIVE_SESSION_ENABLED_DEFAULT. */
  liveSession: z.boolean().optional(),
});
export type CreateRunBody = z.infer<typeof createRunBodySchema>;

/** Comma-separated values of one enumeration in a query string (`?status=running,assigned`), deduplicated. */
function csvOf<T extends string>(item: z.ZodType<T, string>, max: number) {
  return z
    .string()
    .max(200)
    .transform((s) => [...new Set(s.split(','))])
    .pipe(z.array(item).min(1).max(max));
}

/** Which live shares a listed run must have (`any`: at least one READY share; `none`: no READY share). */
export const ShareFilter = { any: 'any', none: 'none', web: 'web', tmate: 'tmate', upterm: 'upterm' } as const;
export type ShareFilter = (typeof ShareFilter)[keyof typeof ShareFilter];
export const shareFilterSchema = z.enum(ShareFilter);

/** `GET /api/task-runs` query. Filters combine with AND; the order is always newest first. */
export const listRunsQuerySchema = z.strictObject({
  /** One status or several, comma-separated (`running,assigned`). */
  status: csvOf(runStatusSchema, 7).optional(),
  /** Control state(s), comma-separated: `agent`, `paused`, `operator`. */
  control: csvOf(controlStateSchema, 3).optional(),
  /** `true`: only runs whose agent asked for an operator; `false`: only the others. */
  needsOperator: z.enum(['true', 'false']).transform((v) => v === 'true').optional(),
  /** Runs with a READY share (`any`, or of one provider), or without one (`none`). */
  share: shareFilterSchema.optional(),
  /**
   * Case-insensitive text: a run matches when its title, a label key or value (or `key:value`),
   * its creator's or worker's name contains it, or its id starts with it. At most 200 characters.
   */
  q: oneLine(200).optional(),
  /** Opaque cursor from the previous page's `nextCursor`. */
  cursor: z.string().max(200).optional(),
  /** Page size, 1–200. Default 50. */
  limit: z.coerce.number().int().min(1).max(200).default(50),
});
export type ListRunsQuery = z.infer<typeof listRunsQuerySchema>;
export const runListSchema = z.object({ runs: z.array(runSchema), nextCursor: z.string().nullable() });
export type RunList = z.infer<typeof runListSchema>;

export const runIdParamsSchema = z.strictObject({ id: z.uuid() });

/** `POST /api/task-runs/:id/cancel` body (optional). */
export const cancelRunBodySchema = z.strictObject({ reason: z.string().max(500).optional() });

/** An API token as admins see it: never the secret, never its hash. */
export const apiTokenSchema = z.object({
  id: z.string(),
  kind: z.enum(['user', 'worker']),
  userId: z.string().nullable(),
  workerId: z.string().nullable(),
  label: z.string(),
  createdAt: z.string(),
  /** Written at most once a minute per token. */
  lastUsedAt: z.string().nullable(),
  expiresAt: z.string().nullable(),
  revokedAt: z.string().nullable(),
});
export type ApiTokenView = z.infer<typeof apiTokenSchema>;
export const apiTokenListSchema = z.object({ tokens: z.array(apiTokenSchema) });
export const revokeTokenResponseSchema = z.object({ token: apiTokenSchema });
/** `GET /api/users/:id/tokens`, `DELETE /api/tokens/:id` path. */
export const idParamsSchema = z.strictObject({ id: z.uuid() });

/** `POST /api/task-runs/:id/live-session` body. */
export const createLiveSessionBodySchema = z.strictObject({
  provider: providerSchema.optional(),
  ttlMinutes: z.number().int().min(1).optional(),
  /** tmate or upterm: end the run's active share of the other external provider first (default false: both may run). */
  switch: z.boolean().optional(),
});
/** `POST /api/task-runs/:id/live-session/extend` body: the new TTL from now. */
export const extendLiveSessionBodySchema = z.strictObject({
  ttlMinutes: z.number().int().min(1),
  /** Which share; default the primary (newest active) one. */
  provider: providerSchema.optional(),
});

/** `POST /api/task-runs/:id/live-session/revoke` body. */
export const revokeLiveSessionBodySchema = z.strictObject({
  reason: z.string().min(1).max(500).optional(),
  /** Revoke only this provider's share; default every active share of the run. */
  provider: providerSchema.optional(),
});

export const sessionResponseSchema = z.object({ session: liveSessionSchema });
export const sessionsResponseSchema = z.object({ sessions: z.array(liveSessionSchema) });

/** `GET /api/auth/whoami` response: who the bearer token belongs to. */
export const whoamiSchema = z.object({
  kind: z.enum(['user', 'worker']),
  id: z.string(),
  name: z.string(),
  role: z.string().nullable(),
});
export type Whoami = z.infer<typeof whoamiSchema>;

/** `GET /api/task-runs/:id/events` query: the run's audit rows in chain order. */
export const listEventsQuerySchema = z.strictObject({
  /** Rows after this chain position (the previous page's `nextCursor`). */
  cursor: z.coerce.number().int().min(0).optional(),
  /** Page size, 1–1000. Default 200. */
  limit: z.coerce.number().int().min(1).max(1000).default(200),
  /** Only rows of this action, e.g. `session.revoke`. */
  action: z.string().regex(/^[a-z][a-z.-]{0,59}$/).optional(),
  /** `jsonl` streams one row per line (the export format). */
  format: z.enum(['json', 'jsonl']).default('json'),
});

export const auditEventSchema = z.object({
  id: z.string(),
  runId: z.string().nullable(),
  seq: z.number().int(),
  sessionId: z.string().nullable(),
  correlationId: z.string(),
  actorType: z.string(),
  actorId: z.string(),
  action: z.string(),
  result: z.string(),
  at: z.string(),
  metadata: z.record(z.string(), z.unknown()),
  prevHash: z.string().nullable(),
  hash: z.string(),
});
export type AuditEvent = z.infer<typeof auditEventSchema>;

/**
 * A run's audit chain head signed by the hub (Ed25519): the signature covers the RFC 8785
 * (JCS) canonical JSON of `{hash, runId, seq, signedAt}`. See docs/audit.md.
 */
export const auditHeadSchema = z.object({
  runId: z.string(),
  /** Seq of the newest row the head covers; 0 for an empty chain. */
  seq: z.number().int(),
  /** That row's hash; '' for an empty chain. */
  hash: z.string(),
  /** When the hub signed it (ISO 8601). */
  signedAt: z.string(),
  /** First 16 hex digits of sha-256 over the raw 32-byte public key (not signed: a hint). */
  keyId: z.string(),
  /** Ed25519 signature, base64. */
  signature: z.string(),
});
export type AuditHead = z.infer<typeof auditHeadSchema>;

/** `GET /api/audit/public-key` response: the key that verifies every signed head. */
export const auditPublicKeySchema = z.object({
  algorithm: z.literal('Ed25519'),
  keyId: z.string(),
  /** Raw 32-byte public key, base64 (what `pnpm handoff audit verify --key` takes). */
  publicKey: z.string(),
  /** The same key as an SPKI PEM block. */
  pem: z.string(),
});
export type AuditPublicKey = z.infer<typeof auditPublicKeySchema>;

/** `GET /api/task-runs/:id/events/verify` response. */
export const verifyResponseSchema = z.object({
  ok: z.boolean(),
  rows: z.number().int(),
  /**
   * The first row whose hash (or link to the previous row) does not match; or, for a tail cut
   * below the newest signed checkpoint, the first missing seq (no `id`: the row is gone).
   */
  brokenAt: z.object({ seq: z.number().int(), id: z.string().optional(), reason: z.string() }).optional(),
});
export type VerifyResponse = z.infer<typeof verifyResponseSchema>;

/** `GET /api/approvals` query. */
export const listApprovalsQuerySchema = z.strictObject({ status: z.enum(['pending', 'approved', 'denied', 'expired']).optional() });
export const approvalIdParamsSchema = z.strictObject({ id: z.uuid() });
/** `POST /api/approvals/:id/approve|deny` body. */
export const resolveApprovalBodySchema = z.strictObject({ reason: z.string().min(1).max(500).optional() });
export const approvalListSchema = z.object({ approvals: z.array(approvalSchema) });

/**
 * `POST /api/task-runs/:id/control` body. `takeover` pauses the agent (soft, escalating),
 * grants the caller write access and makes them the controller; `handback` (controller
 * only) needs a `summary` for the agent.
 */
export const controlBodySchema = z
  .strictObject({
    action: z.enum(['pause', 'resume', 'takeover', 'handback']),
    /** Pause mode for pause and takeover; default soft (escalates to hard after PAUSE_SOFT_GRACE). */
    mode: pauseModeSchema.optional(),
    /** Hand-back summary for the agent, 1–4000 characters; required for handback. */
    summary: z.string().trim().min(1).max(4000).optional(),
    /** Takeover: how long the taker's write grant lasts, in minutes. Default LIVE_RW_GRANT_TTL. */
    ttlMinutes: z.number().int().min(1).max(100_000).optional(),
    /** With handback: end another operator's takeover (policy action `control.handback.force`, admins by default). */
    force: z.boolean().optional(),
  })
  .superRefine((b, ctx) => {
    if (b.action === 'handback' && b.summary === undefined) ctx.addIssue({ code: 'custom', path: ['summary'], message: 'a hand-back needs a summary for the agent' });
    if (b.summary !== undefined && b.action !== 'handback') ctx.addIssue({ code: 'custom', path: ['summary'], message: 'summary is only for handback' });
    if (b.force !== undefined && b.action !== 'handback') ctx.addIssue({ code: 'custom', path: ['force'], message: 'force is only for handback' });
    if (b.mode !== undefined && b.action !== 'pause' && b.action !== 'takeover') ctx.addIssue({ code: 'custom', path: ['mode'], message: 'mode is only for pause and takeover' });
    if (b.ttlMinutes !== undefined && b.action !== 'takeover') ctx.addIssue({ code: 'custom', path: ['ttlMinutes'], message: 'ttlMinutes is only for takeover' });
  });
export type ControlBody = z.infer<typeof controlBodySchema>;

/** `POST /api/task-runs/:id/operator-messages` body. */
export const operatorMessageBodySchema = z.strictObject({ message: z.string().trim().min(1).max(4000) });
export const operatorMessageListSchema = z.object({ messages: z.array(operatorMessageSchema) });

/** `POST /api/task-runs/:id/live-session/grant-write` body. */
export const grantWriteBodySchema = z.strictObject({
  /** Grant length in minutes. Default LIVE_RW_GRANT_TTL; at most LIVE_RW_GRANT_MAX_TTL. */
  ttlMinutes: z.number().int().min(1).max(100_000).optional(),
  /** Which share's RW attach data to reveal; default the primary session. */
  provider: providerSchema.optional(),
});
export type GrantWriteBody = z.infer<typeof grantWriteBodySchema>;

/** `grant-write` response: RW attach data is in this response only, for the grantee alone. */
export const grantWriteResponseSchema = z.object({
  session: liveSessionSchema,
  grant: writeGrantSchema,
  /** tmate/upterm RW attach data (SSH), decrypted for this response only. */
  attachRw: z.record(z.string(), z.string()).optional(),
  /** tmate RW web link, when LIVE_ALLOW_WEB. */
  webRw: z.string().optional(),
  grantedUntil: z.string(),
});
export type GrantWriteResponse = z.infer<typeof grantWriteResponseSchema>;

/** `POST /api/task-runs/:id/live-session/revoke-write` body: one grant, or every live grant of the run. */
export const revokeWriteBodySchema = z.strictObject({ grantId: z.uuid().optional() });
export const revokeWriteResponseSchema = z.object({ session: liveSessionSchema.nullable(), grants: z.array(writeGrantSchema) });

/** `POST /api/task-runs/:id/viewers/kick` body: remove one user from the run's live view. */
export const kickViewerBodySchema = z.strictObject({
  userId: z.uuid(),
  /** Shown to the kicked user and audited. */
  reason: z.string().min(1).max(500).optional(),
});
export type KickViewerBody = z.infer<typeof kickViewerBodySchema>;
/** What a kick did: connections cut on every node, and whether it ended the user's write grant. */
export const kickViewerResponseSchema = z.object({
  kicked: z.object({ userId: z.string(), name: z.string() }),
  connectionsCut: z.number().int().min(0),
  grantRevoked: z.boolean(),
  /** ISO 8601: until when the user may not watch the run again. */
  until: z.string(),
});
export type KickViewerResponse = z.infer<typeof kickViewerResponseSchema>;

/** `GET /api/task-runs/:id/events` (json) response: one page of audit rows in chain order. */
export const auditEventPageSchema = z.object({
  events: z.array(auditEventSchema),
  /** Pass as `cursor` for the next page; null on the last page. */
  nextCursor: z.number().int().nullable(),
  /** The run's whole chain head (not this page's), signed when the response was made. */
  head: auditHeadSchema,
  /** Display names of the actors on this page, by `actorId` (users, workers; the agent and the hub by role). */
  actors: z.record(z.string(), z.string()),
  /**
   * By row `seq`: the newest recording frame seq at the row's time (what the terminal showed
   * then, for "jump to replay"); absent for rows before the first frame.
   */
  frames: z.record(z.string(), z.number().int().min(1)),
  /** True when the rows are an observer's view: some metadata reads `[REDACTED:observer]`. */
  observerView: z.boolean(),
});
export type AuditEventPage = z.infer<typeof auditEventPageSchema>;

/** `GET /healthz` response: the process is up. */
export const healthResponseSchema = z.object({ ok: z.literal(true) });
/** `GET /readyz` response (200 when every check passes, 503 otherwise). */
export const readyResponseSchema = z.object({ ok: z.boolean(), checks: z.record(z.string(), z.boolean()) });

/**
 * One line of printable text of at most `max` characters: names and labels are shown in
 * lists, banners and audit rows, and their columns are `varchar(100)`.
 */
/** At most `max` characters on one line, without control characters (may be empty). */
export function oneLine(max: number) {
  return z
    .string()
    .max(max, `must be at most ${max} characters`)
    .refine((s) => !/[\u0000-\u001f\u007f-\u009f]/.test(s), 'must be one line without control characters');
}

export function singleLineText(max: number) {
  return z
    .string()
    .min(1, 'must not be empty')
    .max(max, `must be at most ${max} characters`)
    .superRefine((s, ctx) => {
      const problem = textProblem(s);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
      // C0/C1 controls (newlines, escapes) would forge lines in logs or move a terminal's cursor.
      else if (/[\u0000-\u001f\u007f-\u009f]/.test(s)) ctx.addIssue({ code: 'custom', message: 'must be one line without control characters' });
    });
}

/** A user's name (CLI `--name`): 1–100 characters on one line. */
export const userNameSchema = singleLineText(100);
/** A worker's name (CLI `worker-token --name`): 1–100 characters on one line. */
export const workerNameSchema = singleLineText(100);
/** A token's label (CLI `--label`): 1–100 characters on one line. */
export const tokenLabelSchema = singleLineText(100);
