import { redactEnv, type ControlState, type GrantStatus, type LiveSession, type Provider, type Run, type RunStatus, type SessionStatus, type WriteGrant } from '@handoff/shared';
import type { LiveSessionRow, RunRow, WriteGrantRow } from './infra/db/entities.js';

const iso = (d: Date | null | undefined): string | null => (d ? d.toISOString() : null);

/** The API shape of a live session; RW attach data never leaves through here. */
export function sessionView(s: LiveSessionRow): LiveSession {
  return {
    id: s.id,
    revision: s.revision,
    runId: s.runId,
    provider: s.provider as Provider,
    status: s.status as SessionStatus,
    workerId: s.workerId ?? null,
    correlationId: s.correlationId,
    createdAt: s.createdAt.toISOString(),
    readyAt: iso(s.readyAt),
    endedAt: iso(s.endedAt),
    expiresAt: s.expiresAt.toISOString(),
    graceWarnedAt: iso(s.graceWarnedAt),
    lastHeartbeatAt: iso(s.lastHeartbeatAt),
    endReason: s.endReason ?? null,
    errorMessage: s.errorMessage ?? null,
    attachRo: s.attachRo ?? null,
  };
}

/** The API shape of a write grant: who may type until when, never any attach data. */
export function grantView(g: WriteGrantRow): WriteGrant {
  return {
    id: g.id,
    revision: g.revision,
    runId: g.runId,
    sessionId: g.sessionId,
    granteeId: g.granteeId,
    granteeName: g.granteeName,
    status: g.status as GrantStatus,
    createdAt: g.createdAt.toISOString(),
    expiresAt: g.expiresAt.toISOString(),
    endedAt: iso(g.endedAt),
    endReason: g.endReason ?? null,
    correlationId: g.correlationId,
  };
}

/** Display names of the users and workers runs refer to (ids stay the reference). */
export interface RunNames {
  users: Map<string, string>;
  workers: Map<string, string>;
}

export function runView(r: RunRow, sessions: LiveSessionRow[], grants: WriteGrantRow[], names: RunNames): Run {
  return {
    id: r.id,
    revision: r.revision,
    title: r.title,
    command: r.command,
    cwd: r.cwd ?? null,
    // A run's env is meant to be non-secret; whatever looks secret is still never shown.
    env: redactEnv(r.env),
    labels: r.labels,
    status: r.status as RunStatus,
    createdBy: r.createdBy,
    createdByName: names.users.get(r.createdBy) ?? null,
    workerId: r.workerId ?? null,
    workerName: r.workerId ? (names.workers.get(r.workerId) ?? null) : null,
    exitCode: r.exitCode ?? null,
    errorMessage: r.errorMessage ?? null,
    control: {
      state: r.controlState as ControlState,
      seq: r.controlSeq,
      appliedSeq: r.controlAppliedSeq,
      mode: (r.controlMode as 'soft' | 'hard' | null) ?? null,
      controllerId: r.controllerId ?? null,
      by: r.controlBy ?? null,
    },
    writeGrants: grants.map(grantView),
    needsOperator: r.needsOperatorReason && r.needsOperatorAt ? { reason: r.needsOperatorReason, at: r.needsOperatorAt.toISOString() } : null,
    liveSessionEnabled: r.liveSessionEnabled,
    createdAt: r.createdAt.toISOString(),
    assignedAt: iso(r.assignedAt),
    startedAt: iso(r.startedAt),
    endedAt: iso(r.endedAt),
    sessions: sessions.map(sessionView),
  };
}
