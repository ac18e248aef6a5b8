import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { em } from '../../server/src/infra/db/orm.js';
import { api } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';

// A run's state change is one conditional UPDATE: the row is written once (its revision moves by
// one), and the audit row records the state it left — not the state it entered.
describe('run transitions write the row once', () => {
  let hub: TestHub;
  let operator: string;

  beforeAll(async () => {
    hub = await startTestHub();
    operator = await hub.token('operator');
  });
  afterAll(() => hub?.stop());

  const revisionOf = async (runId: string) =>
    Number((await em(hub.orm).execute<{ revision: string }[]>('select revision from runs where id = ?', [runId]))[0]!.revision);

  it('cancelling a queued run: revision +1, audited as from queued', async () => {
    // No worker is connected: the run stays queued until it is cancelled.
    const created = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: 'true' }, liveSession: false });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const runId = created.body.id as string;
    const before = await revisionOf(runId);
    const cancelled = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, { reason: 'not needed' });
    expect(cancelled.status, JSON.stringify(cancelled.body)).toBe(200);
    expect(cancelled.body.status).toBe('cancelled');
    expect(await revisionOf(runId)).toBe(before + 1);
    const [audit] = await em(hub.orm).execute<{ metadata: { from: string; reason: string } }[]>(
      `select metadata from audit_events where run_id = ? and action = 'run.cancel'`,
      [runId],
    );
    expect(audit!.metadata).toEqual({ from: 'queued', reason: 'not needed' });
  });
});
