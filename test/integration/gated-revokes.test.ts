import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Run } from '@handoff/shared';
import { api, emitAck, eventually, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

const AGENT = 'i=0; while true; do handoff-agent checkpoint; i=$((i+1)); echo "step $i"; sleep 0.2; done';
type AuditRow = { action: string; result: string; actorId: string; metadata: Record<string, unknown> };

// Revokes and dismissals pass the policy like every privileged command: under the default
// policy an operator never cuts an admin's write access; an admin can end anyone's takeover.
describe('gated revokes and the admin’s forced hand-back', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let viewer: Viewer;
  let admin: string;
  let adminId: string;
  let operator: string;
  let operatorId: string;
  let other: string;
  const runs: string[] = [];

  beforeAll(async () => {
    hub = await startTestHub({ env: { PAUSE_SOFT_GRACE: '1s' } });
    admin = await hub.token('admin');
    operator = await hub.token('operator');
    other = await hub.token('operator');
    adminId = (await api(hub.url, admin, 'GET', '/api/auth/whoami')).body.id;
    operatorId = (await api(hub.url, operator, 'GET', '/api/auth/whoami')).body.id;
    viewer = await Viewer.connect(hub.url, admin);
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`gated-${randomBytes(3).toString('hex')}`), capacity: 3 });
  });
  afterAll(async () => {
    for (const id of runs) await api(hub.url, admin, 'POST', `/api/task-runs/${id}/cancel`, {}).catch(() => undefined);
    viewer?.close();
    await worker?.stop();
    await hub?.stop();
  });

  const running = async () => {
    const res = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: AGENT } });
    const runId = res.body.id as string;
    runs.push(runId);
    await emitAck(viewer.socket, 'run:subscribe', { runId });
    await viewer.untilStatus(runId, ['running'], 20_000);
    await viewer.until('web READY', () => viewer.runs.get(runId)?.sessions.find((s) => s.provider === 'web' && s.status === 'READY'));
    return runId;
  };
  const audit = async (runId: string) => (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events?limit=1000`)).body.events as AuditRow[];
  const getRun = async (runId: string) => (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}`)).body as Run;

  it('an operator cannot revoke an admin’s grant, nor the share it rides on; the refusal is audited and nothing changes; an admin can', async () => {
    const runId = await running();
    const grant = await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session/grant-write`, { ttlMinutes: 10 });
    expect(grant.status).toBe(200);
    const before = await getRun(runId);

    const cut = await api(hub.url, other, 'POST', `/api/task-runs/${runId}/live-session/revoke-write`, {});
    expect({ status: cut.status, code: cut.body.error?.code }).toEqual({ status: 403, code: 'POLICY_DENIED' });
    const share = await api(hub.url, other, 'POST', `/api/task-runs/${runId}/live-session/revoke`, { provider: 'web' });
    expect({ status: share.status, code: share.body.error?.code }).toEqual({ status: 403, code: 'POLICY_DENIED' });
    const after = await getRun(runId);
    expect({ grants: after.writeGrants, sessions: after.sessions.map((s) => [s.id, s.status]) }).toEqual({ grants: before.writeGrants, sessions: before.sessions.map((s) => [s.id, s.status]) });
    const denied = (await audit(runId)).filter((r) => r.result === 'denied').map((r) => r.action);
    expect(denied).toEqual(expect.arrayContaining(['rw.revoke', 'session.revoke']));

    // An operator's own grant is theirs to end; an admin ends anyone's.
    await api(hub.url, other, 'POST', `/api/task-runs/${runId}/live-session/grant-write`, { ttlMinutes: 5 });
    const own = await api(hub.url, other, 'POST', `/api/task-runs/${runId}/live-session/revoke-write`, { grantId: (await getRun(runId)).writeGrants.find((g) => g.granteeId !== adminId)!.id });
    expect(own.status).toBe(200);
    const byAdmin = await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/live-session/revoke-write`, {});
    expect(byAdmin.status).toBe(200);
    expect((await getRun(runId)).writeGrants).toEqual([]);
  });

  it('observers cannot dismiss a request for an operator; operators can (audited)', async () => {
    const res = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'handoff-agent request-operator "stuck on the lockfile"; sleep 30' } });
    const runId = res.body.id as string;
    runs.push(runId);
    await emitAck(viewer.socket, 'run:subscribe', { runId });
    await viewer.until('needs-operator', () => viewer.runs.get(runId)?.needsOperator, 20_000);
    const observer = await hub.token('observer');
    expect((await api(hub.url, observer, 'POST', `/api/task-runs/${runId}/needs-operator/dismiss`, {})).status).toBe(403);
    expect((await getRun(runId)).needsOperator?.reason).toBe('stuck on the lockfile');
    const dismissed = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/needs-operator/dismiss`, {});
    expect(dismissed.status).toBe(200);
    expect(dismissed.body.needsOperator).toBeNull();
    expect((await audit(runId)).find((r) => r.action === 'run.needs-operator.dismiss')).toMatchObject({ actorId: operatorId, result: 'ok' });
  });

  it('an admin forces the hand-back of another operator’s takeover: their grant ends, the agent resumes with a packet naming who forced it', async () => {
    const runId = await running();
    const taken = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/control`, { action: 'takeover', mode: 'hard' });
    expect(taken.status, JSON.stringify(taken.body)).toBe(200);
    await eventually('takeover applied', async () => {
      const r = await getRun(runId);
      return r.control.state === 'operator' && r.control.appliedSeq === r.control.seq;
    });

    // Not the controller: refused without force; with force an operator is denied by the policy.
    const notMine = await api(hub.url, other, 'POST', `/api/task-runs/${runId}/control`, { action: 'handback', summary: 'mine now' });
    expect({ status: notMine.status, code: notMine.body.error?.code }).toEqual({ status: 409, code: 'STATE_CONFLICT' });
    const forcedByOperator = await api(hub.url, other, 'POST', `/api/task-runs/${runId}/control`, { action: 'handback', summary: 'mine now', force: true });
    expect({ status: forcedByOperator.status, code: forcedByOperator.body.error?.code }).toEqual({ status: 403, code: 'POLICY_DENIED' });
    expect((await getRun(runId)).control.state).toBe('operator');

    const forced = await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/control`, { action: 'handback', summary: 'the operator left; carry on', force: true });
    expect(forced.status, JSON.stringify(forced.body)).toBe(200);
    const done = await eventually('hand-back applied', async () => {
      const r = await getRun(runId);
      return r.control.state === 'agent' && r.control.appliedSeq === r.control.seq ? r : undefined;
    });
    expect(done.writeGrants).toEqual([]);
    const inbox = () => readFileSync(path.join(worker.runDir, runId, 'inbox.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    const packet = await eventually('the packet', async () => inbox().find((e) => e.type === 'handoff'));
    expect(packet).toMatchObject({ actorId: adminId, summary: 'the operator left; carry on', forcedFrom: { id: operatorId } });
    const rows = await audit(runId);
    expect(rows.find((r) => r.action === 'control.handback')).toMatchObject({ actorId: adminId, metadata: { forced: true } });
    expect(rows.find((r) => r.action === 'rw.revoke' && r.metadata.reason === 'handback')).toBeTruthy();
    // The agent steps again.
    const steps = () => (viewer.live.get(runId) ?? []).length;
    await emitAck(viewer.socket, 'term:subscribe', { runId });
    const n = steps();
    await viewer.until('agent output after the hand-back', () => steps() > n + 2, 10_000);
  });
});
