import { defineEntity, p, type InferEntity } from '@mikro-orm/core';
import type { Command } from '@handoff/shared';

// Entities mirror migrations/ exactly; relations are plain id columns on purpose:
// services query by id and use conditional updates, never lazy graph loading.

export const UserSchema = defineEntity({
  name: 'User',
  tableName: 'users',
  properties: {
    id: p.uuid().primary(),
    name: p.string().unique(),
    role: p.string(),
    createdAt: p.datetime(),
    disabledAt: p.datetime().nullable(),
  },
});
export type User = InferEntity<typeof UserSchema>;

export const ApiTokenSchema = defineEntity({
  name: 'ApiToken',
  tableName: 'api_tokens',
  properties: {
    id: p.uuid().primary(),
    kind: p.string(),
    userId: p.uuid().nullable(),
    workerId: p.uuid().nullable(),
    tokenHash: p.string().unique(),
    label: p.string(),
    createdAt: p.datetime(),
    lastUsedAt: p.datetime().nullable(),
    revokedAt: p.datetime().nullable(),
    /** Null: the token never expires. */
    expiresAt: p.datetime().nullable(),
  },
});
export type ApiToken = InferEntity<typeof ApiTokenSchema>;

export const WorkerSchema = defineEntity({
  name: 'Worker',
  tableName: 'workers',
  properties: {
    id: p.uuid().primary(),
    name: p.string().unique(),
    capacity: p.integer(),
    status: p.string(),
    version: p.string().nullable(),
    connectedAt: p.datetime().nullable(),
    lastHeartbeatAt: p.datetime().nullable(),
    createdAt: p.datetime(),
  },
});
export type Worker = InferEntity<typeof WorkerSchema>;

export const RunSchema = defineEntity({
  name: 'Run',
  tableName: 'runs',
  properties: {
    id: p.uuid().primary(),
    title: p.string(),
    command: p.json<Command>(),
    cwd: p.string().nullable(),
    env: p.json<Record<string, string>>(),
    labels: p.json<Record<string, string>>(),
    status: p.string(),
    createdBy: p.string(),
    workerId: p.uuid().nullable(),
    exitCode: p.integer().nullable(),
    errorMessage: p.string().nullable(),
    controlState: p.string(),
    controlMode: p.string().nullable(),
    controlSeq: p.integer(),
    controlAppliedSeq: p.integer(),
    controllerId: p.string().nullable(),
    controlChangedAt: p.datetime().nullable(),
    /** Who made the latest control change (the taker while `operator`); null: the system. */
    controlBy: p.json<{ id: string; name: string }>().nullable(),
    /** Shared by the audit rows of one control change (a takeover and its hand-back share one). */
    controlCorrelationId: p.uuid().nullable(),
    /** The latest hand-back, pushed with `state: agent` until the worker applied it. */
    handback: p.json<{ summary: string; by: { id: string; name: string }; at: string; forcedFrom?: { id: string; name: string } }>().nullable(),
    needsOperatorReason: p.string().nullable(),
    needsOperatorAt: p.datetime().nullable(),
    liveSessionEnabled: p.boolean(),
    createdAt: p.datetime(),
    assignedAt: p.datetime().nullable(),
    startedAt: p.datetime().nullable(),
    endedAt: p.datetime().nullable(),
    /** Bumped by the database on every update (migration 0004); never written by the ORM. */
    revision: p.integer().default(1).persist(false),
  },
});
export type RunRow = InferEntity<typeof RunSchema>;

export const LiveSessionSchema = defineEntity({
  name: 'LiveSession',
  tableName: 'live_sessions',
  properties: {
    id: p.uuid().primary(),
    runId: p.uuid(),
    provider: p.string(),
    status: p.string(),
    workerId: p.uuid().nullable(),
    correlationId: p.uuid(),
    createdBy: p.string(),
    createdAt: p.datetime(),
    readyAt: p.datetime().nullable(),
    endedAt: p.datetime().nullable(),
    expiresAt: p.datetime(),
    graceWarnedAt: p.datetime().nullable(),
    lastHeartbeatAt: p.datetime().nullable(),
    /** When the hub last asked a worker to start this share (migration 0018); the stuck-start sweep counts from it. */
    startRequestedAt: p.datetime().nullable(),
    endReason: p.string().nullable(),
    errorMessage: p.string().nullable(),
    attachRo: p.json<Record<string, string>>().nullable(),
    /** AES-256-GCM ciphertext of the RW attach data (never returned as is). */
    attachRwEnc: p.text().nullable(),
    /** Bumped by the database on every update (migration 0004); never written by the ORM. */
    revision: p.integer().default(1).persist(false),
  },
});
export type LiveSessionRow = InferEntity<typeof LiveSessionSchema>;

export const WriteGrantSchema = defineEntity({
  name: 'WriteGrant',
  tableName: 'write_grants',
  properties: {
    id: p.uuid().primary(),
    runId: p.uuid(),
    sessionId: p.uuid(),
    granteeId: p.uuid(),
    granteeName: p.string(),
    status: p.string(),
    createdAt: p.datetime(),
    expiresAt: p.datetime(),
    endedAt: p.datetime().nullable(),
    endedBy: p.string().nullable(),
    endReason: p.string().nullable(),
    correlationId: p.uuid(),
    /** The grant revealed its session's RW attach data: when it ends, the share is restarted. */
    revealsRw: p.boolean(),
    /** Bumped by the database on every update (migration 0004); never written by the ORM. */
    revision: p.integer().default(1).persist(false),
  },
});
export type WriteGrantRow = InferEntity<typeof WriteGrantSchema>;

export const AuditEventSchema = defineEntity({
  name: 'AuditEvent',
  tableName: 'audit_events',
  properties: {
    id: p.uuid().primary(),
    runId: p.uuid().nullable(),
    seq: p.integer(),
    sessionId: p.uuid().nullable(),
    correlationId: p.uuid(),
    actorType: p.string(),
    actorId: p.string(),
    action: p.string(),
    result: p.string(),
    at: p.datetime(),
    metadata: p.json<Record<string, unknown>>(),
    prevHash: p.string().nullable(),
    hash: p.string(),
  },
});
/** A row of the audit log (the wire view is `AuditEvent` in shared/). */
export type AuditEventRow = InferEntity<typeof AuditEventSchema>;

export const OperatorMessageSchema = defineEntity({
  name: 'OperatorMessage',
  tableName: 'operator_messages',
  properties: {
    id: p.uuid().primary(),
    runId: p.uuid(),
    actorId: p.uuid(),
    message: p.text(),
    createdAt: p.datetime(),
    deliveredAt: p.datetime().nullable(),
  },
});
export type OperatorMessage = InferEntity<typeof OperatorMessageSchema>;

export const ApprovalSchema = defineEntity({
  name: 'Approval',
  tableName: 'approvals',
  properties: {
    id: p.uuid().primary(),
    runId: p.uuid().nullable(),
    action: p.string(),
    context: p.json<Record<string, unknown>>(),
    requesterId: p.uuid(),
    approverRoles: p.json<string[]>(),
    status: p.string(),
    createdAt: p.datetime(),
    expiresAt: p.datetime(),
    resolvedAt: p.datetime().nullable(),
    resolvedBy: p.uuid().nullable(),
    reason: p.string().nullable(),
  },
});
export type Approval = InferEntity<typeof ApprovalSchema>;

export const RecordingChunkSchema = defineEntity({
  name: 'RecordingChunk',
  tableName: 'recording_chunks',
  properties: {
    runId: p.uuid().primary(),
    seq: p.integer().primary(),
    t: p.integer(),
    data: p.text(),
  },
});
export type RecordingChunk = InferEntity<typeof RecordingChunkSchema>;

export const allEntities = [
  UserSchema,
  ApiTokenSchema,
  WorkerSchema,
  RunSchema,
  LiveSessionSchema,
  WriteGrantSchema,
  AuditEventSchema,
  OperatorMessageSchema,
  ApprovalSchema,
  RecordingChunkSchema,
];
