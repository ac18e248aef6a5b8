import type { LiveSession, Run, RunStatus, ControlState, Provider, SessionStatus } from '@handoff/shared';
import type { LiveSessionRow, RunRow } from '../db/entities.js';

const iso = (d: Date | null | undefined): string | null => (d ? d.toISOString() : null);

/** The API shape of a live session; RW attach data never leaves through here. */
export function sessionView(s: LiveSessionRow): LiveSession {
  return {
    id: s.id,
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

export function runView(r: RunRow, sessions: LiveSessionRow[]): Run {
  return {
    id: r.id,
    title: r.title,
    command: r.command,
    cwd: r.cwd ?? null,
    env: r.env,
    labels: r.labels,
    status: r.status as RunStatus,
    createdBy: r.createdBy,
    workerId: r.workerId ?? null,
    exitCode: r.exitCode ?? null,
    errorMessage: r.errorMessage ?? null,
    control: {
      state: r.controlState as ControlState,
      seq: r.controlSeq,
      appliedSeq: r.controlAppliedSeq,
      mode: (r.controlMode as 'soft' | 'hard' | null) ?? null,
      controllerId: r.controllerId ?? null,
    },
    needsOperator: r.needsOperatorReason && r.needsOperatorAt ? { reason: r.needsOperatorReason, at: r.needsOperatorAt.toISOString() } : null,
    liveSessionEnabled: r.liveSessionEnabled,
    createdAt: r.createdAt.toISOString(),
    assignedAt: iso(r.assignedAt),
    startedAt: iso(r.startedAt),
    endedAt: iso(r.endedAt),
    sessions: sessions.map(sessionView),
  };
}
