import type { z } from 'zod';
import { approvalSchema, operatorMessageSchema, runSchema } from './domain.js';
import type { ErrorCode } from './errors.js';
import {
  apiTokenListSchema,
  approvalIdParamsSchema,
  approvalListSchema,
  auditEventPageSchema,
  cancelRunBodySchema,
  controlBodySchema,
  createLiveSessionBodySchema,
  createRunBodySchema,
  extendLiveSessionBodySchema,
  grantWriteBodySchema,
  grantWriteResponseSchema,
  healthResponseSchema,
  idParamsSchema,
  kickViewerBodySchema,
  kickViewerResponseSchema,
  listApprovalsQuerySchema,
  listEventsQuerySchema,
  listRunsQuerySchema,
  operatorMessageBodySchema,
  operatorMessageListSchema,
  readyResponseSchema,
  resolveApprovalBodySchema,
  revokeLiveSessionBodySchema,
  revokeTokenResponseSchema,
  revokeWriteBodySchema,
  revokeWriteResponseSchema,
  runIdParamsSchema,
  runListSchema,
  sessionResponseSchema,
  sessionsResponseSchema,
  verifyResponseSchema,
  auditPublicKeySchema,
  whoamiSchema,
} from './rest.js';
import { createWebhookBodySchema, createdWebhookSchema, webhookDeliveryListSchema, webhookEndpointSchema, webhookListSchema } from './webhooks.js';

/** Who may call a route: nobody needs a token (`public`), a user of at least that role, or a scraper. */
export type RouteAuth = 'public' | 'observer' | 'operator' | 'admin' | 'metrics';

/** A non-JSON response body, described by its media type. */
export interface RawBody {
  mediaType: string;
  description: string;
}

/**
 * One REST route, declared once: the server's handlers parse with these schemas, the
 * OpenAPI document is generated from them, and the tests check responses against them.
 * Paths use OpenAPI templates (`{id}`); Express's `:id` is derived.
 */
export interface ApiRoute {
  method: 'get' | 'post' | 'delete';
  path: string;
  operationId: string;
  summary: string;
  tag: string;
  auth: RouteAuth;
  params?: z.ZodObject;
  query?: z.ZodObject;
  body?: z.ZodType;
  /** Success responses by status: a JSON schema or a raw body. */
  responses: Record<number, z.ZodType | RawBody>;
  /** A second media type of the 200 response (e.g. the JSON-lines export). */
  alsoRaw?: RawBody;
  /** Error codes the route can answer besides the ones every authenticated route has. */
  errors?: readonly ErrorCode[];
}

/** Errors any authenticated `/api` route can answer (DESIGN.md §3). */
export const COMMON_ERRORS: readonly ErrorCode[] = ['UNAUTHENTICATED', 'FORBIDDEN', 'RATE_LIMITED', 'UNAVAILABLE', 'INTERNAL'];
/** What a route behind the policy gate may add: a denial or a pending approval (202). */
const GATED: readonly ErrorCode[] = ['VALIDATION', 'NOT_FOUND', 'POLICY_DENIED', 'APPROVAL_REQUIRED', 'STATE_CONFLICT'];

const runParams = runIdParamsSchema;
const ndjson: RawBody = { mediaType: 'application/x-ndjson', description: 'audit rows, one JSON object per line (`format=jsonl`), then a last line `{"head": <signed head>}` covering exactly those rows' };

/** Every REST route of the hub. A test walks the Express router and compares it with this list. */
export const apiRoutes: readonly ApiRoute[] = [
  { method: 'get', path: '/healthz', operationId: 'health', summary: 'Liveness: the process answers', tag: 'ops', auth: 'public', responses: { 200: healthResponseSchema } },
  {
    method: 'get', path: '/readyz', operationId: 'ready', summary: 'Readiness: database (and Redis when configured) reachable', tag: 'ops', auth: 'public',
    responses: { 200: readyResponseSchema, 503: readyResponseSchema },
  },
  {
    method: 'get', path: '/metrics', operationId: 'metrics', summary: 'Prometheus metrics (admin bearer token or HANDOFF_METRICS_TOKEN)', tag: 'ops', auth: 'metrics',
    responses: { 200: { mediaType: 'text/plain; version=0.0.4', description: 'Prometheus text exposition format' } },
  },
  {
    method: 'get', path: '/api/openapi.json', operationId: 'openapi', summary: 'This document (OpenAPI 3.1)', tag: 'ops', auth: 'public',
    responses: { 200: { mediaType: 'application/json', description: 'OpenAPI 3.1 document' } },
  },
  {
    method: 'get', path: '/api/docs', operationId: 'docs', summary: 'The API reference, rendered as HTML', tag: 'ops', auth: 'public',
    responses: { 200: { mediaType: 'text/html', description: 'self-contained HTML page' } },
  },
  { method: 'get', path: '/api/auth/whoami', operationId: 'whoami', summary: 'Who the bearer token belongs to', tag: 'auth', auth: 'observer', responses: { 200: whoamiSchema } },

  { method: 'post', path: '/api/task-runs', operationId: 'createRun', summary: 'Queue a task run', tag: 'runs', auth: 'operator', body: createRunBodySchema, responses: { 201: runSchema }, errors: GATED },
  { method: 'get', path: '/api/task-runs', operationId: 'listRuns', summary: 'List runs, newest first (cursor paging); search by text, filter by status, control state, needs-operator, live share', tag: 'runs', auth: 'observer', query: listRunsQuerySchema, responses: { 200: runListSchema }, errors: ['VALIDATION'] },
  { method: 'get', path: '/api/task-runs/{id}', operationId: 'getRun', summary: 'A run with its control state, sessions and grants', tag: 'runs', auth: 'observer', params: runParams, responses: { 200: runSchema }, errors: ['VALIDATION', 'NOT_FOUND'] },
  { method: 'post', path: '/api/task-runs/{id}/cancel', operationId: 'cancelRun', summary: 'Cancel a run', tag: 'runs', auth: 'operator', params: runParams, body: cancelRunBodySchema, responses: { 200: runSchema }, errors: GATED },

  {
    method: 'post', path: '/api/task-runs/{id}/live-session', operationId: 'createLiveSession', summary: 'Start a terminal share (idempotent per run and provider)', tag: 'live-sessions', auth: 'operator',
    params: runParams, body: createLiveSessionBodySchema, responses: { 200: sessionResponseSchema, 201: sessionResponseSchema }, errors: [...GATED, 'LIMIT_REACHED'],
  },
  { method: 'get', path: '/api/task-runs/{id}/live-session', operationId: 'getLiveSession', summary: 'The primary (newest active, else most recent) share', tag: 'live-sessions', auth: 'observer', params: runParams, responses: { 200: sessionResponseSchema }, errors: ['VALIDATION', 'NOT_FOUND'] },
  { method: 'get', path: '/api/task-runs/{id}/live-sessions', operationId: 'listLiveSessions', summary: 'Every share of the run', tag: 'live-sessions', auth: 'observer', params: runParams, responses: { 200: sessionsResponseSchema }, errors: ['VALIDATION', 'NOT_FOUND'] },
  { method: 'post', path: '/api/task-runs/{id}/live-session/extend', operationId: 'extendLiveSession', summary: 'Set a share’s TTL from now (policy-bounded)', tag: 'live-sessions', auth: 'operator', params: runParams, body: extendLiveSessionBodySchema, responses: { 200: sessionResponseSchema }, errors: [...GATED, 'EXPIRED'] },
  { method: 'post', path: '/api/task-runs/{id}/live-session/revoke', operationId: 'revokeLiveSession', summary: 'End shares now (viewers cut off, provider killed)', tag: 'live-sessions', auth: 'operator', params: runParams, body: revokeLiveSessionBodySchema, responses: { 200: sessionResponseSchema }, errors: GATED },
  {
    // Observers may ask too: the policy decides (by default their request waits for an operator's approval).
    method: 'post', path: '/api/task-runs/{id}/live-session/grant-write', operationId: 'grantWrite', summary: 'A time-bound write grant for the caller; RW attach data in this response only', tag: 'write-grants', auth: 'observer',
    params: runParams, body: grantWriteBodySchema, responses: { 200: grantWriteResponseSchema }, errors: [...GATED, 'LIMIT_REACHED'],
  },
  { method: 'get', path: '/api/task-runs/{id}/live-session/write-grant', operationId: 'revealWriteGrant', summary: 'The caller’s live grant with its attach data again', tag: 'write-grants', auth: 'operator', params: runParams, responses: { 200: grantWriteResponseSchema }, errors: ['VALIDATION', 'NOT_FOUND'] },
  { method: 'post', path: '/api/task-runs/{id}/live-session/revoke-write', operationId: 'revokeWrite', summary: 'Revoke one grant or every live grant of the run', tag: 'write-grants', auth: 'operator', params: runParams, body: revokeWriteBodySchema, responses: { 200: revokeWriteResponseSchema }, errors: GATED },

  {
    method: 'post', path: '/api/task-runs/{id}/control', operationId: 'control', summary: 'Pause, resume, take over or hand back a run', tag: 'control', auth: 'operator',
    params: runParams, body: controlBodySchema, responses: { 200: runSchema }, errors: GATED,
  },
  { method: 'post', path: '/api/task-runs/{id}/operator-messages', operationId: 'sendMessage', summary: 'Send a message to the agent and every observer', tag: 'messages', auth: 'operator', params: runParams, body: operatorMessageBodySchema, responses: { 201: operatorMessageSchema }, errors: GATED },
  { method: 'get', path: '/api/task-runs/{id}/operator-messages', operationId: 'listMessages', summary: 'The run’s operator messages', tag: 'messages', auth: 'observer', params: runParams, responses: { 200: operatorMessageListSchema }, errors: ['VALIDATION', 'NOT_FOUND'] },
  {
    method: 'post', path: '/api/task-runs/{id}/viewers/kick', operationId: 'kickViewer', summary: 'Remove one user from the run’s live view (all their connections, every node) and end their write grant', tag: 'presence', auth: 'operator',
    params: runParams, body: kickViewerBodySchema, responses: { 200: kickViewerResponseSchema }, errors: GATED,
  },
  { method: 'post', path: '/api/task-runs/{id}/needs-operator/dismiss', operationId: 'dismissNeedsOperator', summary: 'Clear the run’s needs-operator flag', tag: 'control', auth: 'operator', params: runParams, responses: { 200: runSchema }, errors: GATED },

  {
    method: 'get', path: '/api/task-runs/{id}/events', operationId: 'listAuditEvents', summary: 'The run’s audit rows in chain order (JSON page, or JSON lines export)', tag: 'audit', auth: 'observer',
    params: runParams, query: listEventsQuerySchema, responses: { 200: auditEventPageSchema }, alsoRaw: ndjson, errors: ['VALIDATION', 'NOT_FOUND', 'POLICY_DENIED'],
  },
  {
    method: 'get', path: '/api/audit/public-key', operationId: 'auditPublicKey', summary: 'The Ed25519 public key that verifies signed audit heads (public: it reveals nothing)', tag: 'audit', auth: 'public',
    responses: { 200: auditPublicKeySchema },
  },
  { method: 'get', path: '/api/task-runs/{id}/events/verify', operationId: 'verifyAudit', summary: 'Recompute the run’s hash chain', tag: 'audit', auth: 'observer', params: runParams, responses: { 200: verifyResponseSchema }, errors: ['VALIDATION', 'NOT_FOUND', 'POLICY_DENIED'] },
  {
    method: 'get', path: '/api/task-runs/{id}/recording.cast', operationId: 'recording', summary: 'The run’s terminal recording (asciicast v2)', tag: 'audit', auth: 'observer', params: runParams,
    responses: { 200: { mediaType: 'application/x-asciicast', description: 'asciicast v2: a header line, then `[seconds, "o", data]` lines' } }, errors: ['VALIDATION', 'NOT_FOUND'],
  },

  { method: 'get', path: '/api/approvals', operationId: 'listApprovals', summary: 'Approval requests', tag: 'approvals', auth: 'operator', query: listApprovalsQuerySchema, responses: { 200: approvalListSchema }, errors: ['VALIDATION'] },
  { method: 'post', path: '/api/approvals/{id}/approve', operationId: 'approve', summary: 'Approve (not your own request); the command is replayed as the requester', tag: 'approvals', auth: 'operator', params: approvalIdParamsSchema, body: resolveApprovalBodySchema, responses: { 200: approvalSchema }, errors: GATED },
  { method: 'post', path: '/api/approvals/{id}/deny', operationId: 'deny', summary: 'Deny an approval request', tag: 'approvals', auth: 'operator', params: approvalIdParamsSchema, body: resolveApprovalBodySchema, responses: { 200: approvalSchema }, errors: GATED },

  { method: 'post', path: '/api/webhooks', operationId: 'createWebhook', summary: 'Register an outbound webhook endpoint; answers its signing secret once', tag: 'webhooks', auth: 'admin', body: createWebhookBodySchema, responses: { 201: createdWebhookSchema }, errors: ['VALIDATION'] },
  { method: 'get', path: '/api/webhooks', operationId: 'listWebhooks', summary: 'Registered webhook endpoints (no secrets)', tag: 'webhooks', auth: 'admin', responses: { 200: webhookListSchema } },
  { method: 'delete', path: '/api/webhooks/{id}', operationId: 'deleteWebhook', summary: 'Remove an endpoint; its pending deliveries are dropped', tag: 'webhooks', auth: 'admin', params: idParamsSchema, responses: { 200: webhookEndpointSchema }, errors: ['VALIDATION', 'NOT_FOUND'] },
  { method: 'get', path: '/api/webhooks/{id}/deliveries', operationId: 'listWebhookDeliveries', summary: 'The endpoint’s newest deliveries: status, attempts, last error', tag: 'webhooks', auth: 'admin', params: idParamsSchema, responses: { 200: webhookDeliveryListSchema }, errors: ['VALIDATION', 'NOT_FOUND'] },
  { method: 'get', path: '/api/users/{id}/tokens', operationId: 'listUserTokens', summary: 'A user’s API tokens (never their secrets), newest first', tag: 'tokens', auth: 'admin', params: idParamsSchema, responses: { 200: apiTokenListSchema }, errors: ['VALIDATION', 'NOT_FOUND'] },
  { method: 'delete', path: '/api/tokens/{id}', operationId: 'revokeToken', summary: 'Revoke a token: refused within a second, its sockets disconnected on every node', tag: 'tokens', auth: 'admin', params: idParamsSchema, responses: { 200: revokeTokenResponseSchema }, errors: ['VALIDATION', 'NOT_FOUND', 'STATE_CONFLICT'] },
];

/** Whether a declared response is a raw (non-JSON-schema) body. */
export function isRawBody(r: z.ZodType | RawBody): r is RawBody {
  return typeof (r as RawBody).mediaType === 'string';
}
