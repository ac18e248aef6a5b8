import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiRoutes, dashboardClientEvents, workerClientEvents, type ApiRoute } from '@handoff/shared';
import { em } from '../../server/src/infra/db/orm.js';
import { api, connect, emitAck } from '../support/clients.js';
import { hostileStrings, mutants, type Mutant } from '../support/fuzz.js';
import { startTestHub, type TestHub } from '../support/hub.js';

/**
 * Every field of every REST route (walked from `apiRoutes`) and of every client socket event
 * (walked from the event tables) gets same-type hostile values. Some are legal (an RTL
 * override in a title is text): each answer must be a 2xx (accepted) or a 4xx that changed
 * nothing — a checksum of every table's rows is the same before and after — and never a 5xx
 * (an ack with INTERNAL on sockets).
 */

const DENIALS = 'audit_events (denied)';
/** Columns that record liveness, not state: left out of the row checksums. */
const LIVENESS = `'last_heartbeat_at' - 'last_used_at'`;
const UNKNOWN = '01a1fc84-556c-72b6-8c34-8b8d9e28c380';

/** A valid body per operationId to mutate (several where one field changes which others apply). */
const BODIES: Record<string, unknown[]> = {
  createRun: [{ command: { script: 'true' }, title: 't', cwd: '/tmp', env: { A: 'b' }, labels: { k: 'v' }, liveSession: false }, { command: { argv: ['echo', 'hi'] } }],
  cancelRun: [{ reason: 'r' }],
  createLiveSession: [{ provider: 'web', ttlMinutes: 5 }],
  extendLiveSession: [{ ttlMinutes: 5 }],
  revokeLiveSession: [{ reason: 'r', provider: 'web' }],
  grantWrite: [{ ttlMinutes: 5 }],
  revokeWrite: [{ grantId: UNKNOWN }],
  control: [{ action: 'pause', mode: 'soft' }, { action: 'handback', summary: 'done', force: true }],
  sendMessage: [{ message: 'hello' }],
  kickViewer: [{ userId: UNKNOWN, reason: 'r' }],
  approve: [{ reason: 'r' }],
  deny: [{ reason: 'r' }],
  // An event the fuzz never causes (no share nears its expiry): a registered endpoint gets no
  // deliveries, so the delivery queue changes only when a request changed something.
  createWebhook: [{ url: 'http://127.0.0.1:9/hook', events: ['session.grace'], description: 'd', format: 'json' }],
};

/** A valid payload per socket event to mutate (RUN: a run of the fuzzing worker). */
const DASHBOARD_EVENTS: Record<string, unknown> = {
  'runs:subscribe': {}, 'run:subscribe': { runId: 'RUN' }, 'run:unsubscribe': { runId: 'RUN' },
  'term:subscribe': { runId: 'RUN', afterSeq: 0, tailFrames: 50 }, 'term:unsubscribe': { runId: 'RUN' }, 'approvals:subscribe': {},
  'term:input': { runId: 'RUN', data: 'ls\r' },
};
const WORKER_EVENTS: Record<string, unknown> = {
  'worker:hello': { capacity: 1, runs: ['RUN'], version: '1' }, 'worker:heartbeat': { activeRuns: 1, shares: [UNKNOWN] },
  'share:ready': { sessionId: UNKNOWN, attachRo: { k: 'v' }, attachRw: { k: 'v' } }, 'share:failed': { sessionId: UNKNOWN, message: 'm' },
  'control:applied': { runId: 'RUN', seq: 1, effective: 'agent', appliedAt: 1, handoff: { cwd: '/tmp', env: { A: 'b' }, scrollbackSeq: 1 } },
  'run:needs-operator': { runId: 'RUN', reason: 'r' },
  'run:started': { runId: 'RUN', pane: { cols: 120, rows: 32, term: 'screen-256color', shell: '/bin/sh' } }, 'run:output': { runId: 'RUN', frames: [{ seq: 1, t: 0, data: 'x' }] },
  'run:exited': { runId: 'RUN', exitCode: 0, error: 'e' },
};

/** Hostile path segments (already URL-encoded: a lone surrogate has no encoding but its invalid UTF-8). */
const HOSTILE_SEGMENTS = ['%00', `${UNKNOWN}%00`, '%ED%A0%80', '%FF%FE', 'x'.repeat(10_000), '..%2F..%2Fetc%2Fpasswd', `%E2%80%AE${UNKNOWN}`, `${UNKNOWN}%E2%80%8B`, '-1', '9007199254740993', '1.5', 'NaN', '__proto__', 'constructor', UNKNOWN.toUpperCase(), '%20'];

/** encodeURIComponent, except a lone surrogate (which it refuses) becomes its invalid UTF-8 bytes. */
function encode(s: string): string {
  // for…of walks code points: a lone surrogate is the only one-unit string in that range.
  return [...s].map((c) => (/^[\ud800-\udfff]$/.test(c) ? '%ED%A0%80' : encodeURIComponent(c))).join('');
}

describe('fuzz: every route and socket event, same-type hostile values; refusals change nothing', () => {
  let hub: TestHub;
  let admin: string;
  let adminId: string;
  let workerToken: string;
  let workerId: string;
  const counts = { tried: 0, refused: 0, accepted: 0, auditedDenials: 0 };
  const byStatus: Record<string, number> = {};
  const failures: string[] = [];

  beforeAll(async () => {
    // Limits high enough that the fuzzer measures validation, not the rate limiter.
    hub = await startTestHub({
      env: {
        RATE_LIMIT_REST_BURST: '1000000', RATE_LIMIT_REST_PER_SEC: '100000', RATE_LIMIT_SOCKET_BURST: '1000000', RATE_LIMIT_SOCKET_PER_SEC: '100000', RATE_LIMIT_IP_PER_SEC: '1000000',
        // The fuzzing worker is a scripted socket that never heartbeats: the sweeper must not
        // declare it lost mid-fuzz (a state change no request made).
        WORKER_LOST_AFTER: '1h',
        // Nor may the leader's periodic checkpoint sweep sign the chains a request grew while
        // the refusals after it are judged (a new audit_checkpoints row no request made).
        AUDIT_CHECKPOINT_INTERVAL: '1h',
      },
    });
    admin = await hub.token('admin');
    adminId = (await api(hub.url, admin, 'GET', '/api/auth/whoami')).body.id;
    workerToken = await hub.workerToken('fuzz-worker');
    workerId = (await em(hub.orm).execute<{ id: string }[]>(`select id from workers where name = 'fuzz-worker'`))[0]!.id;
  });
  afterAll(async () => {
    console.log(`fuzz: ${counts.tried} hostile payloads tried: ${counts.refused} refused (4xx, no state change; ${counts.auditedDenials} of them left their denial's audit row), ${counts.accepted} accepted (2xx); by status ${JSON.stringify(byStatus)}`);
    await hub?.stop();
  });

  /** md5 of every table's rows, by table. */
  const checksum = async (): Promise<Record<string, string>> => {
    const tables = await em(hub.orm).execute<{ t: string }[]>(`select table_name t from information_schema.tables where table_schema = current_schema() and table_type = 'BASE TABLE' order by 1`);
    // A refusal may leave exactly one trace: the audit row of the denial itself (e.g. input
    // without a write grant is audited `term.input` / `denied`). Those rows are counted apart;
    // every other row of every table must stay as it was.
    const sql = [
      // Liveness bookkeeping moves on its own (heartbeats, a token's throttled last use): not state a request changed.
      ...tables.map(({ t }) => `select '${t}' t, md5(coalesce(string_agg((to_jsonb(x) - ${LIVENESS})::text, '' order by (to_jsonb(x) - ${LIVENESS})::text), '')) h from "${t}" x${t === 'audit_events' ? ` where x.result <> 'denied'` : ''}`),
      `select '${DENIALS}' t, count(*)::text h from audit_events where result = 'denied'`,
    ].join(' union all ');
    return Object.fromEntries((await em(hub.orm).execute<{ t: string; h: string }[]>(sql)).map((r) => [r.t, r.h]));
  };
  /** A checksum that holds still (what an accepted command set off has landed). */
  const settled = async () => {
    let prev = await checksum();
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 25));
      const next = await checksum();
      if (JSON.stringify(next) === JSON.stringify(prev)) return next;
      prev = next;
    }
    return prev;
  };
  const changed = (a: Record<string, string>, b: Record<string, string>) => Object.keys({ ...a, ...b }).filter((t) => a[t] !== b[t]);

  let state: Record<string, string> = {};
  /** Judges one answer: accepted, or refused with nothing changed; never a server error. */
  const judge = async (what: string, outcome: 'accepted' | 'refused' | 'error', status: string) => {
    counts.tried++;
    byStatus[status] = (byStatus[status] ?? 0) + 1;
    if (outcome === 'error') failures.push(`${what} → ${status}`);
    if (outcome === 'accepted') {
      counts.accepted++;
      state = await settled();
      return;
    }
    counts.refused++;
    const after = await checksum();
    const diff = changed(state, after).filter((t) => t !== DENIALS);
    if (diff.length) failures.push(`${what} → ${status} but changed ${diff.join(', ')}`);
    const denials = Number(after[DENIALS]) - Number(state[DENIALS] ?? after[DENIALS]);
    if (denials > 1) failures.push(`${what} → ${status} but wrote ${denials} denial rows`);
    if (denials === 1) counts.auditedDenials++;
    state = after;
  };
  const rest = async (what: string, method: string, path: string, body?: unknown) => {
    const res = await api(hub.url, admin, method.toUpperCase(), path, body === undefined ? undefined : (JSON.stringify(body) ?? 'null'));
    await judge(what, res.status >= 500 ? 'error' : res.status >= 400 ? 'refused' : 'accepted', String(res.status));
  };

  const freshRun = async (): Promise<string> => {
    const id = (await api(hub.url, admin, 'POST', '/api/task-runs', { command: { script: 'true' }, liveSession: false })).body.id as string;
    state = await settled();
    return id;
  };
  /** The route's path with a valid id (a fresh run, the admin, or an id nothing has). */
  const pathWith = (route: ApiRoute, id: string) => route.path.replace('{id}', id);
  const idFor = async (route: ApiRoute) => (route.path.startsWith('/api/task-runs/') ? await freshRun() : route.path.startsWith('/api/users/') ? adminId : UNKNOWN);

  const fuzzed = apiRoutes.filter((r) => r.params || r.query || r.body);

  it('every route with input has a base payload here (a new route is fuzzed, not forgotten)', () => {
    const missing = fuzzed.filter((r) => r.body && !BODIES[r.operationId]).map((r) => r.operationId);
    expect(missing).toEqual([]);
    expect(Object.keys(DASHBOARD_EVENTS).sort()).toEqual(Object.keys(dashboardClientEvents).sort());
    expect(Object.keys(WORKER_EVENTS).sort()).toEqual(Object.keys(workerClientEvents).sort());
  });

  for (const route of fuzzed) {
    it(`${route.method.toUpperCase()} ${route.path}`, async () => {
      state = await settled();
      const before = failures.length;
      if (route.params) {
        const base = BODIES[route.operationId]?.[0];
        for (const seg of HOSTILE_SEGMENTS) await rest(`${route.operationId} path id ${seg.slice(0, 40)}`, route.method, pathWith(route, seg), route.method === 'get' ? undefined : (base ?? {}));
      }
      if (route.query) {
        const path = pathWith(route, await idFor(route));
        for (const key of Object.keys(route.query.shape)) {
          for (const [label, v] of hostileStrings(undefined)) await rest(`${route.operationId} ?${key}: ${label}`, 'get', `${path}?${key}=${encode(v)}`);
          for (const raw of [`${key}=-1`, `${key}=9007199254740993`, `${key}=1.5`, `${key}=NaN`, `${key}=a&${key}=b`, `${key}[x]=1`, `${key}[$gt]=0`, `__proto__[${key}]=1`, `constructor[prototype][${key}]=1`]) {
            await rest(`${route.operationId} ?${raw}`, 'get', `${path}?${raw}`);
          }
        }
      }
      for (const base of BODIES[route.operationId] ?? []) {
        for (const m of mutants(base, route.body)) await rest(`${route.operationId} ${m.what}`, route.method, pathWith(route, await idFor(route)), m.payload);
      }
      expect(failures.slice(before).slice(0, 20), `${failures.length - before} failures`).toEqual([]);
    });
  }

  for (const [ns, table] of [['/dashboard', DASHBOARD_EVENTS], ['/worker', WORKER_EVENTS]] as const) {
    it(`socket ${ns}: every field of every event`, async () => {
      const runId = await freshRun();
      // The fuzzing worker's own run, so its reports reach the run's state (not only a FORBIDDEN).
      await em(hub.orm).execute(`update runs set status = 'running', worker_id = ? where id = ?`, [workerId, runId]);
      const socket = await connect(hub.url, ns, ns === '/dashboard' ? admin : workerToken);
      if (ns === '/worker') expect((await emitAck(socket, 'worker:hello', { capacity: 1, runs: [runId], version: 't' })).ok).toBe(true);
      state = await settled();
      const before = failures.length;
      for (const [event, rawBase] of Object.entries(table)) {
        const base: unknown = JSON.parse(JSON.stringify(rawBase).replaceAll('RUN', runId));
        const all: Mutant[] = mutants(base, (table === DASHBOARD_EVENTS ? dashboardClientEvents : workerClientEvents)[event as never]?.['payload']);
        for (const m of all) {
          const ack = await emitAck(socket, event, m.payload).catch((err: Error) => ({ ok: false as const, error: { code: 'NO_ACK', message: err.message } }));
          const code = ack.ok ? 'ok' : ack.error.code;
          await judge(`${event} ${m.what}`, ack.ok ? 'accepted' : code === 'INTERNAL' || code === 'NO_ACK' ? 'error' : 'refused', code);
          if (!socket.connected) failures.push(`${event} ${m.what}: the connection dropped`);
          if (!socket.connected) break;
        }
      }
      socket.close();
      expect(failures.slice(before).slice(0, 20), `${failures.length - before} failures`).toEqual([]);
    });
  }
});
