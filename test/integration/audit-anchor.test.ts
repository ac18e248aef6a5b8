import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signHead, signingKeyFromSeed } from '../../server/src/domain/audit-head.js';
import { chainHash } from '../../server/src/domain/hash-chain.js';
import { api, Viewer } from '../support/clients.js';
import { createTestDatabase, PG_ADMIN_URL, type TestDatabase } from '../support/db.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

// Issue 11 item 4: the hub runs as a role that can only read and append the audit tables,
// migrations and grants run as the owner, and signed heads let anyone detect a tail that the
// owner (who can disable the triggers) cut off. Real PostgreSQL with throwaway roles.

const CLI = path.resolve('server/src/cli.ts');
const suffix = randomBytes(4).toString('hex');
const OWNER = `handoff_own_${suffix}`;
const HUB = `handoff_hub_${suffix}`;

function urlFor(db: TestDatabase, user: string): string {
  const url = new URL(db.url);
  url.username = user;
  return url.toString();
}

async function sql<T extends pg.QueryResultRow = pg.QueryResultRow>(url: string, text: string, params: unknown[] = []): Promise<pg.QueryResult<T>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await client.query<T>(text, params);
  } finally {
    await client.end();
  }
}

function cli(args: string[], env: Record<string, string> = {}) {
  const res = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { env: { ...process.env, LOG_LEVEL: 'silent', ...env }, encoding: 'utf8', timeout: 60_000 });
  return { code: res.status, out: res.stdout, err: res.stderr };
}

describe('audit log nobody can cut: least-privilege hub role, signed heads, offline verifier', () => {
  let db: TestDatabase;
  let hub: TestHub;
  let worker: WorkerProcess;
  let admin: string;
  let runId: string;
  let ownerUrl: string;
  let hubUrl: string;
  const dir = mkdtempSync(path.join(tmpdir(), 'handoff-anchor-'));

  beforeAll(async () => {
    db = await createTestDatabase();
    await sql(PG_ADMIN_URL, `create role ${OWNER} login`);
    await sql(PG_ADMIN_URL, `create role ${HUB} login`);
    // The owner owns the database and its schema; neither role is a superuser.
    await sql(PG_ADMIN_URL, `alter database ${db.name} owner to ${OWNER}`);
    await sql(db.url, `alter schema public owner to ${OWNER}`);
    ownerUrl = urlFor(db, OWNER);
    hubUrl = urlFor(db, HUB);

    // As the owner: migrate, then grant the hub role (the documented CLI).
    const granted = cli(['db', 'grant-hub-role', '--role', HUB], { MIGRATION_DATABASE_URL: ownerUrl, DATABASE_URL: hubUrl, HANDOFF_DATA_DIR: dir });
    expect(granted.err).toBe('');
    expect(granted.code).toBe(0);
    expect(granted.out).toContain(`revoke update, delete on audit_events, audit_checkpoints, schema_migrations from ${HUB}`);

    // The hub connects as its role and, with MIGRATION_DATABASE_URL set, only checks the schema.
    hub = await startTestHub({ databaseUrl: hubUrl, env: { MIGRATION_DATABASE_URL: ownerUrl, AUDIT_CHECKPOINT_INTERVAL: '200ms' } });
    admin = await hub.token('admin');
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`anchor-${suffix}`) });
    const viewer = await Viewer.connect(hub.url, admin);
    const res = await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'printf "anchored\\n"' }, title: 'anchor' });
    expect(res.status).toBe(201);
    runId = res.body.id;
    await viewer.untilStatus(runId, ['succeeded']);
    viewer.close();
  }, 120_000);

  afterAll(async () => {
    await worker?.stop();
    await hub?.stop();
    await db?.drop();
    await sql(PG_ADMIN_URL, `drop role if exists ${HUB}`).catch(() => {});
    await sql(PG_ADMIN_URL, `drop role if exists ${OWNER}`).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  });

  it('the hub role cannot update, delete, truncate or disable the triggers of the audit tables', async () => {
    const current = await sql<{ u: string; su: boolean }>(hubUrl, 'select current_user as u, rolsuper as su from pg_roles where rolname = current_user');
    expect(current.rows[0]).toEqual({ u: HUB, su: false });
    for (const table of ['audit_events', 'audit_checkpoints']) {
      for (const statement of [`update ${table} set seq = seq`, `delete from ${table}`, `truncate ${table}`]) {
        await expect(sql(hubUrl, statement), statement).rejects.toThrow(`permission denied for table ${table}`);
      }
      await expect(sql(hubUrl, `alter table ${table} disable trigger all`)).rejects.toThrow(`must be owner of table ${table}`);
      await expect(sql(hubUrl, `alter table ${table} disable trigger user`)).rejects.toThrow(`must be owner of table ${table}`);
    }
    // It still reads and appends (the hub wrote this run's rows through it).
    const rows = await sql<{ n: number }>(hubUrl, 'select count(*)::int as n from audit_events where run_id = $1', [runId]);
    expect(rows.rows[0]!.n).toBeGreaterThan(2);
    // And it cannot touch the migration ledger.
    await expect(sql(hubUrl, `delete from schema_migrations`)).rejects.toThrow('permission denied');
  });

  it('runs end to end as that role: audit rows, a verified chain, a signed head, checkpoints', async () => {
    const page = await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events`);
    expect(page.status).toBe(200);
    const actions = page.body.events.map((e: { action: string }) => e.action);
    expect(actions).toEqual(expect.arrayContaining(['run.create', 'run.exit']));
    expect(page.body.head).toMatchObject({ runId, seq: page.body.events.length, hash: page.body.events.at(-1).hash });
    expect((await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events/verify`)).body).toMatchObject({ ok: true });

    // The public key needs no token.
    const key = await fetch(`${hub.url}/api/audit/public-key`);
    expect(key.status).toBe(200);
    const body = await key.json();
    expect(body).toMatchObject({ algorithm: 'Ed25519', keyId: page.body.head.keyId });
    expect(Buffer.from(body.publicKey, 'base64')).toHaveLength(32);

    // The chain's end is covered by a signed checkpoint: the run's exit writes one, unless the
    // sweeper leader signed that same head first (one checkpoint per seq: the exit's insert
    // then does nothing). Which of the two got there first is a race; that one exists is not.
    const exitSeq = page.body.events.find((e: { action: string }) => e.action === 'run.exit').seq;
    await expect.poll(async () => (await sql<{ seq: number }>(ownerUrl, `select coalesce(max(seq), 0)::int as seq from audit_checkpoints where run_id = $1`, [runId])).rows[0]!.seq, { timeout: 10_000 })
      .toBeGreaterThanOrEqual(exitSeq);
    const sources = (await sql<{ source: string }>(ownerUrl, `select source from audit_checkpoints where run_id = $1`, [runId])).rows.map((r) => r.source);
    expect(sources.every((x) => x === 'exit' || x === 'sweep')).toBe(true);
  });

  it('the sweeper leader checkpoints only chains that grew', async () => {
    const viewer = await Viewer.connect(hub.url, admin);
    // No live session: once running, the chain stays still until something is done to the run.
    const res = await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'sleep 30' }, title: 'growing', liveSession: false });
    const id = res.body.id as string;
    await viewer.untilStatus(id, ['running']);
    viewer.close();
    const checkpoints = async () => (await sql<{ seq: number; source: string }>(ownerUrl, `select seq, source from audit_checkpoints where run_id = $1 order by seq`, [id])).rows;
    const headSeq = async () => (await api(hub.url, admin, 'GET', `/api/task-runs/${id}/events?limit=1`)).body.head.seq as number;
    await expect.poll(async () => (await checkpoints()).at(-1)?.seq === (await headSeq()), { timeout: 10_000 }).toBe(true);
    const before = await checkpoints();
    expect(before.every((c) => c.source === 'sweep')).toBe(true);
    // Nothing new → no new checkpoint, over several sweeps.
    const stillAt = await headSeq();
    await new Promise((r) => setTimeout(r, 800));
    expect(await headSeq()).toBe(stillAt);
    expect(await checkpoints()).toEqual(before);
    await api(hub.url, admin, 'POST', `/api/task-runs/${id}/operator-messages`, { message: 'grow the chain' });
    const grown = await headSeq();
    expect(grown).toBeGreaterThan(before.at(-1)!.seq);
    await expect.poll(async () => (await checkpoints()).at(-1)?.seq, { timeout: 10_000 }).toBe(grown);
    await api(hub.url, admin, 'POST', `/api/task-runs/${id}/cancel`, {});
  });

  it('an untouched export verifies offline; a tail cut by the owner is caught against the earlier head; a forged head is refused', async () => {
    const pub = (await (await fetch(`${hub.url}/api/audit/public-key`)).json()).publicKey as string;
    const keyFile = path.join(dir, 'audit.pub');
    writeFileSync(keyFile, pub);
    const exportRun = async (file: string) => {
      const res = await fetch(`${hub.url}/api/task-runs/${runId}/events?format=jsonl`, { headers: { authorization: `Bearer ${admin}` } });
      expect(res.status).toBe(200);
      const text = await res.text();
      writeFileSync(path.join(dir, file), text);
      return text;
    };
    const original = await exportRun('before.jsonl');
    const lines = original.trim().split('\n');
    const head = JSON.parse(lines.at(-1)!).head;
    expect(head.seq).toBe(lines.length - 1);
    writeFileSync(path.join(dir, 'head-before.json'), JSON.stringify({ head }));

    const ok = cli(['audit', 'verify', path.join(dir, 'before.jsonl'), '--key', keyFile]);
    expect(ok.err).toBe('');
    expect(ok.out).toContain(`ok: ${head.seq} rows`);
    expect(ok.code).toBe(0);

    // The owner (not the hub) can disable the triggers: it cuts the newest two rows and, to
    // hide it from the hub's own check too, the checkpoints.
    const owner = new pg.Client({ connectionString: ownerUrl });
    await owner.connect();
    try {
      await owner.query('alter table audit_events disable trigger audit_events_no_update');
      await owner.query('delete from audit_events where run_id = $1 and seq > $2', [runId, head.seq - 2]);
      await owner.query('alter table audit_events enable trigger audit_events_no_update');
      await owner.query('alter table audit_checkpoints disable trigger audit_checkpoints_no_update');
      await owner.query('delete from audit_checkpoints where run_id = $1', [runId]);
      await owner.query('alter table audit_checkpoints enable trigger audit_checkpoints_no_update');
    } finally {
      await owner.end();
    }
    // The chain that remains links up: the hub's own verify has nothing to compare with.
    expect((await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events/verify`)).body).toMatchObject({ ok: true, rows: head.seq - 2 });
    await exportRun('after.jsonl');
    // A fresh export is consistent with itself (the hub signs what it sees)…
    expect(cli(['audit', 'verify', path.join(dir, 'after.jsonl'), '--key', pub]).code).toBe(0);
    // …but not with the head published before the cut.
    const cut = cli(['audit', 'verify', path.join(dir, 'after.jsonl'), '--key', pub, '--head', path.join(dir, 'head-before.json')]);
    expect(cut.code).toBe(1);
    expect(cut.err).toContain(`cut tail: a head signed ${head.signedAt} covers seq ${head.seq}, but the export ends at seq ${head.seq - 2} (2 row(s) missing)`);
    // The old export with its tail chopped off by hand is caught by its own head line too.
    writeFileSync(path.join(dir, 'chopped.jsonl'), [...lines.slice(0, -3), lines.at(-1)].join('\n'));
    const chopped = cli(['audit', 'verify', path.join(dir, 'chopped.jsonl'), '--key', keyFile]);
    expect(chopped.code).toBe(1);
    expect(chopped.err).toContain('cut tail');

    // A head signed by another key over the same rows is refused.
    const forger = signingKeyFromSeed(randomBytes(32));
    const forged = signHead(forger, { runId, seq: head.seq, hash: head.hash, signedAt: new Date().toISOString() });
    writeFileSync(path.join(dir, 'forged.jsonl'), [...lines.slice(0, -1), JSON.stringify({ head: { ...forged, keyId: head.keyId } })].join('\n'));
    const refused = cli(['audit', 'verify', path.join(dir, 'forged.jsonl'), '--key', keyFile]);
    expect(refused.code).toBe(1);
    expect(refused.err).toContain(`the head at seq ${head.seq}`);
    expect(refused.err).toContain('has no valid signature from this key');
  });

  it('the hub reports a cut or a rewrite its checkpoints still show; the hub role refuses to start on a schema that is behind', async () => {
    // A run whose exit checkpoint survives: the owner cuts one row, the hub's verify notices.
    const viewer = await Viewer.connect(hub.url, admin);
    const res = await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'true' } });
    await viewer.untilStatus(res.body.id, ['succeeded']);
    viewer.close();
    const id = res.body.id as string;
    await expect.poll(async () => (await sql(ownerUrl, `select 1 from audit_checkpoints where run_id = $1 and source = 'exit'`, [id])).rowCount, { timeout: 10_000 }).toBe(1);
    const [{ seq }] = (await sql<{ seq: number }>(ownerUrl, `select max(seq)::int as seq from audit_checkpoints where run_id = $1`, [id])).rows as [{ seq: number }];
    await sql(ownerUrl, `begin; alter table audit_events disable trigger audit_events_no_update;
      delete from audit_events where run_id = '${id}' and seq = ${seq}; alter table audit_events enable trigger audit_events_no_update; commit`);
    const verify = await api(hub.url, admin, 'GET', `/api/task-runs/${id}/events/verify`);
    expect(verify.body).toMatchObject({ ok: false, rows: seq - 1, brokenAt: { seq, reason: expect.stringContaining('cut tail') } });

    // Rewriting the last row and recomputing its hash keeps the chain linked, but not equal to
    // the checkpoint; a checkpoint row forged without the key is refused too.
    const viewer2 = await Viewer.connect(hub.url, admin);
    const second = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'true' } })).body.id as string;
    await viewer2.untilStatus(second, ['succeeded']);
    viewer2.close();
    // Wait until the newest checkpoint covers the whole chain (exit, or a sweep after it).
    const newestCheckpoint = async () => (await sql<{ seq: number }>(ownerUrl, `select max(seq)::int as seq from audit_checkpoints where run_id = $1`, [second])).rows[0]!.seq;
    await expect.poll(async () => (await newestCheckpoint()) === (await api(hub.url, admin, 'GET', `/api/task-runs/${second}/events?limit=1`)).body.head.seq, { timeout: 10_000 }).toBe(true);
    const cp = { seq: await newestCheckpoint() };
    const [last] = (await api(hub.url, admin, 'GET', `/api/task-runs/${second}/events?cursor=${cp.seq - 1}&limit=1`)).body.events;
    const { hash: _h, prevHash, ...fields } = last;
    const rewritten = { ...fields, metadata: { ...fields.metadata, rewritten: true } };
    await sql(ownerUrl, `begin; alter table audit_events disable trigger audit_events_no_update;
      update audit_events set metadata = '${JSON.stringify(rewritten.metadata)}'::jsonb, hash = '${chainHash(prevHash, rewritten)}' where id = '${last.id}';
      alter table audit_events enable trigger audit_events_no_update; commit`);
    const rewrittenVerify = await api(hub.url, admin, 'GET', `/api/task-runs/${second}/events/verify`);
    expect(rewrittenVerify.body).toMatchObject({ ok: false, brokenAt: { seq: cp.seq, id: last.id, reason: expect.stringContaining('rewritten chain') } });

    await sql(ownerUrl, `delete from schema_migrations where name = '0010-audit-checkpoints'`);
    try {
      await expect(startTestHub({ databaseUrl: hubUrl, env: { MIGRATION_DATABASE_URL: ownerUrl } })).rejects.toThrow(/missing migrations 0010-audit-checkpoints: run 'pnpm migrate'/);
    } finally {
      await sql(ownerUrl, `insert into schema_migrations (name, executed_at) values ('0010-audit-checkpoints', now())`);
    }
  });
});
