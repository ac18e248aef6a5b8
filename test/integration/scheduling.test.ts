import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RunSchema } from '../../server/src/infra/db/entities.js';
import { em, type Em } from '../../server/src/infra/db/orm.js';
import { RunEvent } from '../../server/src/domain/run-machine.js';
import { applyRunEvent } from '../../server/src/runs/run-queries.js';
import { api, eventually } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { ScriptedWorker } from '../support/scripted-worker.js';

const ASSIGN_ACK_TIMEOUT_MS = 1500;

// Workers are played by socket clients speaking the worker protocol, for exact control of
// when they answer; the hub, PostgreSQL and the protocol are real.
describe('scheduling and the worker registry', () => {
  let hub: TestHub;
  let admin: string;
  const workers: ScriptedWorker[] = [];

  const newRun = async () => (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'sleep 60' }, liveSession: false })).body.id as string;
  const run = async (id: string) => (await api(hub.url, admin, 'GET', `/api/task-runs/${id}`)).body as { status: string; workerId: string | null };
  const worker = async (token: string, opts: { ackAssign?: boolean } = {}) => {
    const w = await ScriptedWorker.connect(hub.url, token, opts);
    workers.push(w);
    return w;
  };
  /** Cancels every run still queued or active, so each test starts with an empty queue. */
  const drainQueue = async () => {
    const rows = await em(hub.orm).execute<{ id: string }[]>(`select id from runs where status in ('queued','assigned','running')`);
    for (const { id } of rows) await api(hub.url, admin, 'POST', `/api/task-runs/${id}/cancel`, {});
  };

  beforeAll(async () => {
    hub = await startTestHub({ env: { ASSIGN_ACK_TIMEOUT: `${ASSIGN_ACK_TIMEOUT_MS}ms`, WORKER_LOST_AFTER: '60s' } });
    admin = await hub.token('admin');
  });
  afterEach(async () => {
    for (const w of workers.splice(0)) w.close();
    await drainQueue();
  });
  afterAll(async () => {
    await hub?.stop();
  });

  it('a stale socket’s disconnect processed after the same worker’s new hello does not unregister it: it still gets runs', async () => {
    const token = await hub.workerToken(`stale-${randomBytes(3).toString('hex')}`);
    const old = await worker(token);
    await old.hello();
    const fresh = await worker(token);
    await fresh.hello();
    // The new hello drops the older connection; its disconnect is handled after that hello.
    await eventually('old socket dropped by the hub', async () => old.disconnectReason);
    expect(old.disconnectReason).toBe('io server disconnect');
    old.close();
    await new Promise((r) => setTimeout(r, 200)); // let the hub process the stale disconnect
    const { status } = (await em(hub.orm).execute<{ status: string }[]>(`select status from workers where name like 'stale-%'`))[0]!;
    expect(status).toBe('online');
    const runId = await newRun();
    await eventually('the live socket gets the run', async () => fresh.assigned.some((a) => a.runId === runId), 3000);
    expect(old.assigned).toEqual([]);
    // Its last connection gone, the worker is offline.
    fresh.close();
    await eventually('offline', async () => (await em(hub.orm).execute<{ status: string }[]>(`select status from workers where name like 'stale-%'`))[0]!.status === 'offline');
  });

  it('a silent worker (never acks run:assign) beside a healthy one: the healthy one gets its run within 1 s; the silent one’s run is requeued, it is told to cancel it, and it backs off', async () => {
    const silent = await worker(await hub.workerToken(`silent-${randomBytes(3).toString('hex')}`), { ackAssign: false });
    await silent.hello([], 4);
    const first = await newRun();
    await eventually('silent worker was pushed the first run', async () => silent.assigned.some((a) => a.runId === first));

    // A healthy worker says hello while the silent one's push is unanswered.
    const healthy = await worker(await hub.workerToken(`healthy-${randomBytes(3).toString('hex')}`));
    const helloAt = Date.now();
    await healthy.hello([], 4);
    const second = await newRun();
    await eventually('healthy worker got a run', async () => healthy.assigned.length > 0, 5000);
    const waited = healthy.assignedAt.get(healthy.assigned[0]!.runId)! - helloAt;
    expect(waited).toBeLessThan(1000);
    expect(healthy.assigned[0]!.runId).toBe(second);

    // The silent worker's push times out: the run goes back to the queue (and to the healthy worker), and the silent one must stop it.
    await eventually('the silent worker is told to cancel', async () => silent.cancels.includes(first), ASSIGN_ACK_TIMEOUT_MS + 3000);
    await eventually('the first run reaches the healthy worker', async () => healthy.assigned.some((a) => a.runId === first), 3000);
    expect(await run(first)).toMatchObject({ status: 'assigned', workerId: expect.any(String) });
    expect(silent.assigned.map((a) => a.runId)).toEqual([first]); // backing off: nothing more pushed to it
    const audit = await api(hub.url, admin, 'GET', `/api/task-runs/${first}/events?action=run.unassign`);
    expect(audit.body.events).toMatchObject([{ metadata: { reason: 'no ack in time' } }]);
    console.log(`healthy worker beside a silent one got its first run ${waited} ms after its hello`);
  });

  it('applyRunEvent checks the worker in the UPDATE itself: a late report of a previous worker does not apply to the run’s next assignment', async () => {
    const a = (await hub.auth.issueWorkerToken(`prev-${randomBytes(3).toString('hex')}`)).worker;
    const b = (await hub.auth.issueWorkerToken(`next-${randomBytes(3).toString('hex')}`)).worker;
    const runId = await newRun();
    await em(hub.orm).execute(`update runs set status = 'assigned', worker_id = ? where id = ?`, [a.id, runId]);
    // Worker A's late "started" reads the run while it is still A's; between that read and
    // the write, the run is requeued and assigned to B (another connection commits it).
    let raced = false;
    const result = await em(hub.orm).transactional(async (tx) => {
      const racing = new Proxy(tx, {
        get(target, prop) {
          if (prop !== 'findOne') {
            const value: unknown = Reflect.get(target, prop, target);
            return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
          }
          return async (...args: Parameters<Em['findOne']>) => {
            const row = await target.findOne(...args);
            await em(hub.orm).execute(`update runs set status = 'assigned', worker_id = ? where id = ?`, [b.id, runId]);
            raced = true;
            return row;
          };
        },
      }) as Em;
      return applyRunEvent(racing, runId, RunEvent.start, { startedAt: new Date() }, { workerId: a.id });
    });
    expect(raced).toBe(true);
    expect(result).toBeNull();
    const row = await em(hub.orm).findOneOrFail(RunSchema, { id: runId }, { refresh: true });
    expect({ status: row.status, workerId: row.workerId, startedAt: row.startedAt }).toEqual({ status: 'assigned', workerId: b.id, startedAt: null });
  });
});
