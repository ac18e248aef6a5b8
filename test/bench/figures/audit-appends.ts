import { randomBytes, randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import pg from 'pg';
import { em, openDatabase, type Orm } from '../../../server/src/infra/db/orm.js';
import { appendAudit, SYSTEM } from '../../../server/src/audit/audit-append.js';
import { createTestDatabase } from '../../support/db.js';
import { repeat, type BenchContext, type Figure } from '../lib/figure.js';
import type { FigureResult } from '../lib/report.js';
import { ratePerSec } from '../lib/stats.js';

const WRITERS = 8;
/** The metadata of every benchmarked row (appendAudit and raw INSERT alike). */
const metadata = (i: number) => ({ i, note: 'bench-payload-'.padEnd(64, 'x') });

/** Runs `WRITERS` loops of `one(writer)` for `ms` and returns completed operations per second. */
async function writersFor(ms: number, one: (writer: number) => Promise<unknown>): Promise<number> {
  const end = performance.now() + ms;
  const t0 = performance.now();
  let done = 0;
  await Promise.all(
    Array.from({ length: WRITERS }, async (_, w) => {
      while (performance.now() < end) {
        await one(w);
        done += 1;
      }
    }),
  );
  return ratePerSec(done, performance.now() - t0);
}

/**
 * Audited appends per second: `appendAudit` in its own transaction (MikroORM on PostgreSQL),
 * 8 concurrent writers on distinct runs — beside raw `pg` INSERTs of a same-size row, and
 * again with the table pre-filled with other runs' rows (history must not slow appends).
 */
export const auditAppends: Figure = {
  name: 'audit-appends',
  async run(ctx: BenchContext): Promise<FigureResult> {
    const windowMs = ctx.quick ? 1000 : 4000;
    const fillRows = ctx.quick ? 100_000 : 1_000_000;
    // Two databases, the same schema: one (almost) empty, one holding `fillRows` rows of other
    // runs. Each repeat measures both, one after the other, so what the machine does meanwhile
    // (other processes, a checkpoint) weighs on both alike.
    const db = await createTestDatabase();
    const filledDb = await createTestDatabase();
    const orm = await openDatabase({ databaseUrl: db.url, dataDir: tmpdir() });
    const filledOrm = await openDatabase({ databaseUrl: filledDb.url, dataDir: tmpdir() });
    const pool = new pg.Pool({ connectionString: db.url, max: WRITERS });
    // pg-pool's end() resolves once its clients are told to end, not once their backends are
    // gone: the database's drop (with force) can still reach one as an error, which a pool
    // without a listener throws (one quick run in three crashed so).
    let ending = false;
    pool.on('error', (err) => {
      if (!ending) ctx.log(`audit-appends: raw INSERT pool: ${err.message}`);
    });
    try {
      // An audited append on its own, as the hub writes a row that records nothing else (a
      // denial, a reveal): one autocommit `audit_append` statement, like the raw INSERT.
      const appendRate = async (on: Orm) => {
        const runs = Array.from({ length: WRITERS }, () => randomUUID());
        let i = 0;
        return writersFor(windowMs, (w) => appendAudit(em(on), { runId: runs[w]!, actor: SYSTEM, action: 'bench.append', metadata: metadata(i++) }, new Date()));
      };
      // The same inside an explicit transaction of its own (BEGIN, the call, COMMIT: three round trips).
      const appendTxRate = async () => {
        const runs = Array.from({ length: WRITERS }, () => randomUUID());
        let i = 0;
        return writersFor(windowMs, (w) => em(orm).transactional((tx) => appendAudit(tx, { runId: runs[w]!, actor: SYSTEM, action: 'bench.append-tx', metadata: metadata(i++) }, new Date())));
      };
      const rawRate = async () => {
        const runs = Array.from({ length: WRITERS }, () => randomUUID());
        const seqs = new Array<number>(WRITERS).fill(0);
        let i = 0;
        return writersFor(windowMs, (w) =>
          pool.query(
            `insert into audit_events (id, run_id, seq, session_id, correlation_id, actor_type, actor_id, action, result, at, metadata, prev_hash, hash)
             values ($1, $2, $3, null, $4, 'system', 'hub', 'bench.raw', 'ok', now(), $5, $6, $7)`,
            [randomUUID(), runs[w], ++seqs[w]!, randomUUID(), JSON.stringify(metadata(i++)), randomBytes(32).toString('hex'), randomBytes(32).toString('hex')],
          ),
        );
      };

      ctx.log(`audit-appends: filling ${fillRows.toLocaleString('en-US')} rows of other runs`);
      const tFill = performance.now();
      await em(filledOrm).execute(
        `insert into audit_events (id, run_id, seq, correlation_id, actor_type, actor_id, action, result, at, metadata, prev_hash, hash)
         select gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad(to_hex(g / 100), 12, '0'))::uuid, g % 100 + 1, gen_random_uuid(),
                'system', 'hub', 'bench.fill', 'ok', now(), '{"note":"bench-fill"}'::jsonb, null, md5(g::text) || md5(g::text)
           from generate_series(0, ? - 1) g`,
        [fillRows],
      );
      // VACUUM too: a million inserted rows cross autovacuum's insert threshold, so its vacuum of
      // the table may otherwise run during the measurement. Then a CHECKPOINT: the fill wrote
      // hundreds of MB of WAL, so a checkpoint would otherwise flush its pages (and fsync them,
      // on the disk the appends' commits fsync to) while the appends are measured. (One full run
      // without either measured 0.39× the empty table in two repeats of three; the same code
      // alone, right after, 1.04×.) What is measured is what history costs an append — the
      // index descents of its head read and insert — not the fill's own writes.
      await em(filledOrm).execute('vacuum analyze audit_events');
      await em(filledOrm).execute('checkpoint');
      const fillS = (performance.now() - tFill) / 1000;

      // Warm every path (connections, prepared plans), then take them in turn in each repeat.
      await appendRate(orm);
      await appendRate(filledOrm);
      const rates = await repeat(ctx, 'audit-appends', async () => ({ raw: await rawRate(), append: await appendRate(orm), appendTx: await appendTxRate(), filled: await appendRate(filledOrm) }));
      const label = fillRows >= 1_000_000 ? '1M' : `${fillRows / 1000}k`;
      return {
        name: 'audit-appends',
        title: 'audited appends/s, 8 concurrent writers on distinct runs',
        floor: `raw \`pg\` INSERT of a same-size row into the same table, ${WRITERS} writers (one pool connection each); for the history row, the floor column is appendAudit's own rate on the (almost) empty table, measured in the same repeat`,
        repeats: ctx.repeats,
        stats: [
          {
            label: 'appends/s, empty table', unit: '/s', handoff: rates.map((e) => e.append), floor: rates.map((e) => e.raw),
            goal: { text: '≥ 50 % of raw', met: (h, f) => f !== null && h >= 0.5 * f },
          },
          {
            label: 'appends/s in an explicit transaction each, empty table', unit: '/s', handoff: rates.map((e) => e.appendTx), floor: rates.map((e) => e.raw),
          },
          {
            label: `appends/s, ${label} rows of other runs`, unit: '/s', handoff: rates.map((e) => e.filled), floor: rates.map((e) => e.append),
            goal: { text: 'within 10 % of the empty table', met: (h, f) => f !== null && h >= 0.9 * f },
          },
        ],
        notes: [
          `Each rate is measured over ${windowMs / 1000} s. An audited append is one \`audit_append(…)\` call (chain lock, head read, hash, insert, all in the database), autocommit like the raw INSERTs — as the hub writes a row that records nothing else (a denial, a reveal); the second row wraps each call in its own BEGIN/COMMIT (three round trips), the cost of a row written with the change it records is part of that change's transaction.`,
          `History: a second database of the same schema holds ${fillRows.toLocaleString('en-US')} rows over ${(fillRows / 100).toLocaleString('en-US')} other runs, written with one \`INSERT … SELECT generate_series\`, then \`VACUUM ANALYZE\` and a \`CHECKPOINT\` (${fillS.toFixed(1)} s); each repeat measures the empty table's rates and then this one's.`,
        ],
      };
    } finally {
      ending = true;
      await pool.end();
      await orm.close();
      await filledOrm.close();
      await db.drop();
      await filledDb.drop();
    }
  },
};
