import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApprovalRequest } from '@handoff/shared';
import { api, connect, emitAck } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';

const dir = mkdtempSync(path.join(tmpdir(), 'handoff-policy-'));
const policyFile = path.join(dir, 'policy.json');
// Operators create runs freely except on prod (denied) or labelled needs=review (an
// operator must approve); admins may read the audit log; nothing else is allowed.
writeFileSync(policyFile, JSON.stringify({
  version: 1,
  rules: [
    { id: 'no-prod', actions: ['run.create'], roles: ['operator'], runLabels: { env: 'prod' }, effect: 'deny', description: 'prod runs are created by the release bot only' },
    { id: 'review', actions: ['run.create'], roles: ['operator'], runLabels: { needs: 'review' }, effect: 'approve', approverRoles: ['operator'] },
    { id: 'ops-create', actions: ['run.create', 'run.cancel'], roles: ['operator'], effect: 'allow' },
    { id: 'admin-audit', actions: ['audit.read'], roles: ['admin'], effect: 'allow' },
  ],
}, null, 2));

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('policy gate and approval chain (custom policy file)', () => {
  let hub: TestHub;
  let alice: string;
  let bob: string;
  let admin: string;

  beforeAll(async () => {
    hub = await startTestHub({ env: { HANDOFF_POLICY: policyFile, APPROVAL_TIMEOUT: '1500ms', SWEEP_INTERVAL: '100ms' } });
    [alice, bob, admin] = [await hub.token('operator'), await hub.token('operator'), await hub.token('admin')];
  });
  afterAll(async () => {
    await hub?.stop();
  });

  const events = async (action: string) => {
    const rows = await (await import('../../server/src/infra/db/orm.js')).em(hub.orm).execute<{ action: string; result: string; metadata: Record<string, unknown> }[]>(
      'select action, result, metadata from audit_events where action = ? order by at', [action]);
    return rows;
  };

  it('denies what no rule allows, with the reason, audited as denied, changing nothing', async () => {
    const prod = await api(hub.url, alice, 'POST', '/api/task-runs', { command: { script: 'true' }, labels: { env: 'prod' } });
    expect(prod.status).toBe(403);
    expect(prod.body.error).toEqual({ code: 'POLICY_DENIED', message: 'run.create denied: prod runs are created by the release bot only' });
    // Admins have no run.create rule here: deny by default.
    const adminCreate = await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'true' } });
    expect(adminCreate.body.error).toMatchObject({ code: 'POLICY_DENIED', message: expect.stringContaining('no rule allows run.create for admin') });
    expect((await api(hub.url, admin, 'GET', '/api/task-runs')).body.runs).toEqual([]);
    const denied = (await events('run.create')).filter((e) => e.result === 'denied');
    expect(denied).toHaveLength(2);
    expect(denied[0]!.metadata).toMatchObject({ ruleId: 'no-prod' });
  });

  it('needs-approval: 202 with a request id, pushed live; the requester cannot approve; another approver can, and the command runs as the requester', async () => {
    const watcher = await connect(hub.url, '/dashboard', admin);
    const pushed: ApprovalRequest[] = [];
    watcher.on('approval:updated', (a: ApprovalRequest) => pushed.push(a));
    await emitAck(watcher, 'approvals:subscribe', {});

    const res = await api(hub.url, alice, 'POST', '/api/task-runs', { command: { script: 'echo reviewed' }, title: 'needs review', labels: { needs: 'review' } });
    expect(res.status).toBe(202);
    expect(res.body.error.code).toBe('APPROVAL_REQUIRED');
    const approvalId = res.body.error.details.approvalId as string;
    expect((await api(hub.url, admin, 'GET', '/api/task-runs')).body.runs).toEqual([]); // nothing ran yet

    const pending = await api(hub.url, bob, 'GET', '/api/approvals?status=pending');
    expect(pending.body.approvals.map((a: ApprovalRequest) => a.id)).toContain(approvalId);

    const self = await api(hub.url, alice, 'POST', `/api/approvals/${approvalId}/approve`, {});
    expect(self.status).toBe(403);
    expect(self.body.error.message).toMatch(/your own request/);

    const approved = await api(hub.url, bob, 'POST', `/api/approvals/${approvalId}/approve`, { reason: 'looks fine' });
    expect(approved.status).toBe(200);
    expect(approved.body).toMatchObject({ status: 'approved', outcome: { ok: true } });
    const bobWho = (await api(hub.url, bob, 'GET', '/api/auth/whoami')).body;
    expect(approved.body).toMatchObject({ resolvedBy: bobWho.id, resolvedByName: bobWho.name });
    const runs = (await api(hub.url, admin, 'GET', '/api/task-runs')).body.runs;
    expect(runs).toHaveLength(1);
    const aliceId = (await api(hub.url, alice, 'GET', '/api/auth/whoami')).body.id;
    expect(runs[0]).toMatchObject({ title: 'needs review', createdBy: aliceId });

    await new Promise((r) => setTimeout(r, 200));
    const seen = pushed.filter((a) => a.id === approvalId);
    expect(seen.map((a) => a.status)).toEqual(['pending', 'approved']);
    expect(seen[1]!.outcome).toMatchObject({ ok: true }); // the requester learns the outcome live
    const again = await api(hub.url, bob, 'POST', `/api/approvals/${approvalId}/approve`, {});
    expect(again.body.error.code).toBe('STATE_CONFLICT');
    watcher.close();
    for (const a of ['approval.requested', 'approval.approved', 'approval.executed']) expect((await events(a)).length, a).toBeGreaterThan(0);
  });

  it('a denied request does nothing; an unanswered one expires as denied', async () => {
    const r1 = await api(hub.url, alice, 'POST', '/api/task-runs', { command: { script: 'true' }, labels: { needs: 'review' } });
    const denied = await api(hub.url, bob, 'POST', `/api/approvals/${r1.body.error.details.approvalId}/deny`, { reason: 'not now' });
    expect(denied.body).toMatchObject({ status: 'denied', reason: 'not now', resolvedByName: expect.any(String) });

    const r2 = await api(hub.url, alice, 'POST', '/api/task-runs', { command: { script: 'true' }, labels: { needs: 'review' } });
    const id2 = r2.body.error.details.approvalId as string;
    const deadline = Date.now() + 5000;
    let status = 'pending';
    while (status === 'pending' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      status = (await api(hub.url, bob, 'GET', '/api/approvals')).body.approvals.find((a: ApprovalRequest) => a.id === id2).status;
    }
    expect(status).toBe('expired');
    const late = await api(hub.url, bob, 'POST', `/api/approvals/${id2}/approve`, {});
    expect(late.body.error.code).toBe('STATE_CONFLICT');
    expect((await events('approval.expired')).length).toBeGreaterThan(0);
    expect((await api(hub.url, admin, 'GET', '/api/task-runs')).body.runs).toHaveLength(1); // only the approved one
  });

  it('refuses malformed approval calls', async () => {
    for (const [p, body] of [['/api/approvals/not-a-uuid/approve', {}], ['/api/approvals/01a1fc84-556c-72b6-8c34-8b8d9e28c380/approve', { reason: 5 }], ['/api/approvals?status=maybe', undefined]] as const) {
      const res = await api(hub.url, bob, body === undefined ? 'GET' : 'POST', p, body);
      expect(res.status, p).toBe(400);
    }
    expect((await api(hub.url, bob, 'POST', '/api/approvals/01a1fc84-556c-72b6-8c34-8b8d9e28c380/approve', {})).status).toBe(404);
  });
});

describe('a bad policy file stops the hub with the file and line at fault', () => {
  it('names the line', async () => {
    const bad = path.join(dir, 'bad.yaml');
    writeFileSync(bad, 'version: 1\nrules:\n  - id: x\n    actions: [run.create]\n    effect: maybe\n');
    await expect(startTestHub({ env: { HANDOFF_POLICY: bad } })).rejects.toThrow(new RegExp(`${bad.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:5`));
  });
});
