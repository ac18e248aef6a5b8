import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { em } from '../../server/src/infra/db/orm.js';
import { api, eventually } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';

type AuditRow = { action: string; result: string; correlationId: string; metadata: Record<string, unknown> };

// An approval replays the command as its requester as they are *when it runs*, and runs it
// exactly once, even across a crash between the approval and the execution.
describe('approvals re-check the requester and survive a crash', () => {
  let hub: TestHub;
  let admin: string;
  let runId: string;

  beforeAll(async () => {
    hub = await startTestHub({ env: { SWEEP_INTERVAL: '100ms' } });
    admin = await hub.token('admin');
    // No worker: the run stays queued, which is enough to share it.
    runId = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'sleep 60' } })).body.id as string;
  });
  afterAll(async () => {
    await api(hub.url, admin, 'POST', `/api/task-runs/${runId}/cancel`, {}).catch(() => undefined);
    await hub?.stop();
  });

  const whoami = async (token: string) => (await api(hub.url, token, 'GET', '/api/auth/whoami')).body as { id: string; name: string };
  /** An operator asks for a tmate share: the default policy wants an admin's approval. */
  const requestShare = async (operator: string) => {
    const res = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'tmate' });
    expect(res.status).toBe(202);
    return res.body.error.details.approvalId as string;
  };
  const tmateSessions = async () => ((await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/live-sessions`)).body.sessions as { provider: string; status: string }[]).filter((s) => s.provider === 'tmate' && s.status !== 'ENDED');
  const audit = async () => (await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events?limit=1000`)).body.events as AuditRow[];

  it('a requester demoted (or disabled) after asking gets nothing run; the refusal is audited', async () => {
    for (const change of [`update users set role = 'observer' where id = ?`, `update users set disabled_at = now() where id = ?`]) {
      const operator = await hub.token('operator');
      const me = await whoami(operator);
      const approvalId = await requestShare(operator);
      await em(hub.orm).execute(change, [me.id]);
      const approved = await api(hub.url, admin, 'POST', `/api/approvals/${approvalId}/approve`, {});
      expect(approved.status).toBe(200);
      expect(approved.body).toMatchObject({ status: 'approved', outcome: { ok: false, error: { code: 'POLICY_DENIED' } } });
      expect(await tmateSessions()).toEqual([]);
      expect((await audit()).find((r) => r.action === 'approval.executed' && r.correlationId === approvalId)).toMatchObject({ result: 'denied' });
    }
  });

  it('approved but not executed (the node died in between): executed once by the next sweep; not again if it had already run', async () => {
    const operator = await hub.token('operator');
    const approvalId = await requestShare(operator);
    const adminId = (await whoami(admin)).id;
    // What a crash right after the approval committed leaves behind: approved, no outcome.
    await em(hub.orm).execute(`update approvals set status = 'approved', resolved_at = now() - interval '10 seconds', resolved_by = ? where id = ?`, [adminId, approvalId]);
    const done = await eventually('the recovered execution', async () => {
      const a = (await api(hub.url, admin, 'GET', '/api/approvals?status=approved')).body.approvals.find((x: { id: string }) => x.id === approvalId);
      return a?.outcome ? a : undefined;
    });
    expect(done.outcome).toMatchObject({ ok: true });
    const creates = async () => (await audit()).filter((r) => r.action === 'session.create' && r.correlationId === approvalId);
    expect(await creates()).toHaveLength(1);
    expect(await tmateSessions()).toHaveLength(1);

    // A crash after the command committed but before its outcome was recorded: not run twice.
    await em(hub.orm).execute(`update approvals set context = context - 'outcome' where id = ?`, [approvalId]);
    const again = await eventually('the second recovery', async () => {
      const a = (await api(hub.url, admin, 'GET', '/api/approvals?status=approved')).body.approvals.find((x: { id: string }) => x.id === approvalId);
      return a?.outcome ? a : undefined;
    });
    expect(again.outcome).toMatchObject({ ok: true, recovered: true });
    expect(await creates()).toHaveLength(1);
    expect(await tmateSessions()).toHaveLength(1);
  });
});
