import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { em, openDatabase, type Orm } from '../../server/src/infra/db/orm.js';
import { appendAudit, SYSTEM } from '../../server/src/audit/audit-append.js';
import { listAudit, verifyAudit } from '../../server/src/audit/audit-log.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';

// The one-round-trip append (migration 0013's audit_append) against a real PostgreSQL: writers
// of one chain interleave for real and the chain stays exactly verifiable.
describe('audit append: one round trip, chains serialized', () => {
  let db: TestDatabase;
  let orm: Orm;

  beforeAll(async () => {
    db = await createTestDatabase();
    orm = await openDatabase({ databaseUrl: db.url, dataDir: tmpdir() });
  });
  afterAll(async () => {
    await orm?.close();
    await db?.drop();
  });

  /** Advisory-lock waits right now (a second writer of a chain queued behind the first). */
  const lockWaiters = async () =>
    Number((await em(orm).execute<{ n: string }[]>(`select count(*) as n from pg_locks where locktype = 'advisory' and not granted`))[0]!.n);

  it('a second writer waits for the first one to commit, then chains onto its row', async () => {
    const runId = randomUUID();
    await em(orm).transactional((tx) => appendAudit(tx, { runId, actor: SYSTEM, action: 'test.first' }, new Date()));
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let aRow: { seq: number; hash: string } | undefined;
    const a = em(orm).transactional(async (tx) => {
      aRow = await appendAudit(tx, { runId, actor: SYSTEM, action: 'test.a' }, new Date());
      await held; // A holds the chain's lock, uncommitted
    });
    while (!aRow) await new Promise((r) => setTimeout(r, 5));
    const b = em(orm).transactional((tx) => appendAudit(tx, { runId, actor: SYSTEM, action: 'test.b' }, new Date()));
    // The race happened: B is blocked on the chain's lock while A's row is uncommitted.
    const deadline = Date.now() + 5000;
    while ((await lockWaiters()) < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(await lockWaiters()).toBe(1);
    release();
    await a;
    const bRow = await b;
    // B read the head after A committed (a fresh snapshot after the lock): no fork, no duplicate seq.
    expect(aRow!.seq).toBe(2);
    expect(bRow.seq).toBe(3);
    expect(bRow.prevHash).toBe(aRow!.hash);
    expect(await verifyAudit(em(orm), runId)).toEqual({ ok: true, rows: 3 });
  });

  it('a rolled-back append leaves no row and burns no seq', async () => {
    const runId = randomUUID();
    await em(orm).transactional((tx) => appendAudit(tx, { runId, actor: SYSTEM, action: 'test.kept' }, new Date()));
    await expect(
      em(orm).transactional(async (tx) => {
        await appendAudit(tx, { runId, actor: SYSTEM, action: 'test.rolled-back' }, new Date());
        throw new Error('the command failed after its audit row');
      }),
    ).rejects.toThrow('the command failed');
    await em(orm).transactional((tx) => appendAudit(tx, { runId, actor: SYSTEM, action: 'test.next' }, new Date()));
    const { events } = await listAudit(em(orm), runId, { limit: 10 });
    expect(events.map((e) => [e.seq, e.action])).toEqual([[1, 'test.kept'], [2, 'test.next']]);
    expect(await verifyAudit(em(orm), runId)).toEqual({ ok: true, rows: 2 });
  });

  it('8 concurrent writers × 30 appends on one run (and on the global chain) interleave into one verifiable chain', async () => {
    const runId = randomUUID();
    const writers = 8;
    const each = 30;
    let maxWaiters = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        maxWaiters = Math.max(maxWaiters, await lockWaiters());
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    const globalBefore = Number((await em(orm).execute<{ n: string }[]>('select count(*) as n from audit_events where run_id is null'))[0]!.n);
    await Promise.all(
      Array.from({ length: writers }, async (_, w) => {
        for (let i = 0; i < each; i++) {
          await em(orm).transactional(async (tx) => {
            await appendAudit(tx, { runId, actor: { type: 'worker', id: `w${w}` }, action: 'test.race', metadata: { w, i, secret: 'password=hunter2' } }, new Date());
            if (i % 10 === 0) await appendAudit(tx, { runId: null, actor: SYSTEM, action: 'test.global', metadata: { w, i } }, new Date());
          });
        }
      }),
    );
    sampling = false;
    await sampler;
    const rows: Array<{ seq: number; actorId: string; metadata: Record<string, unknown> }> = [];
    for (let cursor = 0; ; ) {
      const page = await listAudit(em(orm), runId, { cursor, limit: 100 });
      rows.push(...page.events);
      if (page.nextCursor === null) break;
      cursor = page.nextCursor;
    }
    expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: writers * each }, (_, i) => i + 1));
    // Interleaving happened: writers took turns on the chain, and some waited for the lock.
    const switches = rows.filter((r, i) => i > 0 && r.actorId !== rows[i - 1]!.actorId).length;
    expect(switches).toBeGreaterThan(writers * 3);
    expect(maxWaiters).toBeGreaterThan(0);
    // Each writer's own rows are in its order; redaction still applies before hashing.
    for (let w = 0; w < writers; w++) expect(rows.filter((r) => r.actorId === `w${w}`).map((r) => r.metadata.i)).toEqual(Array.from({ length: each }, (_, i) => i));
    expect(JSON.stringify(rows[0]!.metadata)).not.toContain('hunter2');
    expect(await verifyAudit(em(orm), runId)).toEqual({ ok: true, rows: writers * each });
    // The global chain (no run) kept its own unbroken sequence.
    const global = await em(orm).execute<{ seq: number }[]>('select seq from audit_events where run_id is null order by seq');
    expect(global.map((g) => g.seq)).toEqual(Array.from({ length: globalBefore + writers * 3 }, (_, i) => i + 1));
  });
});
