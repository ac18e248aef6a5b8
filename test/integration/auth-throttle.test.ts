import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { io } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { metrics } from '../../server/src/metrics.js';
import { REDIS_URL, createTestDatabase, type TestDatabase } from '../support/db.js';
import { startTestHub, type TestHub } from '../support/hub.js';

/**
 * A request from a chosen loopback address: Linux routes all of 127/8 to `lo`, so binding
 * the client socket to 127.0.0.2 is another client IP for the hub — no X-Forwarded-For
 * (which the hub ignores unless TRUST_PROXY_HOPS says a proxy wrote it).
 */
function request(baseUrl: string, opts: { from: string; token?: string; method?: string; path?: string; body?: string; agent: http.Agent }): Promise<{ status: number; retryAfter: string | undefined; code: string | undefined }> {
  const url = new URL(opts.path ?? '/api/task-runs', baseUrl);
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: opts.method ?? 'GET',
        localAddress: opts.from,
        agent: opts.agent,
        headers: { ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}), ...(opts.body ? { 'content-type': 'application/json' } : {}) },
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => {
          let code: string | undefined;
          try {
            code = (JSON.parse(text) as { error?: { code: string } }).error?.code;
          } catch {
            /* not JSON */
          }
          resolve({ status: res.statusCode!, retryAfter: res.headers['retry-after'], code });
        });
      },
    );
    req.once('error', reject);
    req.end(opts.body);
  });
}

/** `n` requests, `concurrency` at a time; the statuses in order of completion. */
async function flood<T>(n: number, concurrency: number, send: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) out.push(await send(next++));
  }));
  return out;
}

const count = <T>(xs: T[], pred: (x: T) => boolean) => xs.filter(pred).length;

function handshake(baseUrl: string, from: string, token: string): Promise<string> {
  const socket = io(`${baseUrl}/dashboard`, { transports: ['websocket'], auth: { token }, reconnection: false, forceNew: true, localAddress: from } as Parameters<typeof io>[1]);
  return new Promise((resolve) => {
    socket.once('connect', () => (socket.close(), resolve('ok')));
    socket.once('connect_error', (err: Error & { data?: { code: string } }) => (socket.close(), resolve(err.data?.code ?? err.message)));
  });
}

describe('failed authentication is throttled per IP before parsing and token lookup', () => {
  const FAILURES = 50;
  let hub: TestHub;
  let agent: http.Agent;
  let lookups = 0;

  beforeAll(async () => {
    hub = await startTestHub({ env: { RATE_LIMIT_AUTH_FAILURES: String(FAILURES), RATE_LIMIT_AUTH_BLOCK: '1m', RATE_LIMIT_IP_PER_SEC: '100000' } });
    // Counts token lookups (the DB query a wrong token costs) on the instance the hub uses.
    const authenticate = hub.auth.authenticate.bind(hub.auth);
    hub.auth.authenticate = (token) => (lookups++, authenticate(token));
    agent = new http.Agent({ keepAlive: true, maxSockets: 50 });
  });
  afterAll(async () => {
    agent?.destroy();
    await hub?.stop();
  });

  it('5,000 wrong tokens from one IP: 401 up to the budget, then 429 with Retry-After and no lookup; another IP is unaffected', async () => {
    const limitedBefore = await metricValue('rest');
    const started = Date.now();
    const results = await flood(5000, 50, (i) =>
      // POSTs with a body too: once the IP is blocked, neither is parsed.
      request(hub.url, { from: '127.0.0.1', agent, token: `hnd_wrong_${i}`, method: i % 2 ? 'POST' : 'GET', body: i % 2 ? JSON.stringify({ command: { script: 'x'.repeat(100_000) } }) : undefined }),
    );
    const elapsed = Date.now() - started;
    expect(count(results, (r) => r.status === 401)).toBe(FAILURES);
    expect(count(results, (r) => r.status === 429)).toBe(5000 - FAILURES);
    expect(results.filter((r) => r.status === 429).every((r) => r.code === 'RATE_LIMITED' && Number(r.retryAfter) >= 1 && Number(r.retryAfter) <= 60)).toBe(true);
    // The failures that crossed the budget looked their token up; the blocked ones did not.
    expect(lookups).toBeLessThanOrEqual(FAILURES + 50);
    expect((await metricValue('rest')) - limitedBefore).toBe(5000 - FAILURES);
    console.log(`auth throttle: 5000 wrong tokens in ${elapsed} ms → ${FAILURES} × 401, ${5000 - FAILURES} × 429; ${lookups} token lookups`);

    // Even a valid token from the blocked IP waits (its validity would cost the lookup).
    const admin = await hub.token('admin');
    expect((await request(hub.url, { from: '127.0.0.1', agent, token: admin })).status).toBe(429);
    // Another client: its own budget, untouched.
    expect((await request(hub.url, { from: '127.0.0.2', agent, token: admin })).status).toBe(200);
    expect((await request(hub.url, { from: '127.0.0.2', agent, token: 'hnd_wrong' })).status).toBe(401);
    // The socket handshake of the blocked IP is refused before its lookup; the other IP connects.
    expect(await handshake(hub.url, '127.0.0.1', admin)).toBe('RATE_LIMITED');
    expect(await handshake(hub.url, '127.0.0.2', admin)).toBe('ok');
  });

  it('failed socket handshakes count against the IP too', async () => {
    const results: string[] = [];
    for (let i = 0; i < FAILURES + 3; i++) results.push(await handshake(hub.url, '127.0.0.3', `hnd_wrong_${i}`));
    expect(results.slice(0, FAILURES - 1).every((r) => r === 'UNAUTHENTICATED')).toBe(true);
    expect(results.slice(FAILURES)).toEqual(['RATE_LIMITED', 'RATE_LIMITED', 'RATE_LIMITED']);
    expect((await request(hub.url, { from: '127.0.0.3', agent, token: 'hnd_wrong' })).status).toBe(429);
  });
});

describe('with Redis, budgets are cluster-wide: two nodes give one budget, not two', () => {
  let db: TestDatabase;
  let a: TestHub;
  let b: TestHub;
  let agent: http.Agent;

  beforeAll(async () => {
    db = await createTestDatabase();
    // 100 requests per principal per 100 s window; 20 failed authentications per IP.
    const env = { REDIS_KEY_PREFIX: `handoff-test-${randomBytes(4).toString('hex')}`, RATE_LIMIT_REST_BURST: '100', RATE_LIMIT_REST_PER_SEC: '1', RATE_LIMIT_AUTH_FAILURES: '20' };
    a = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    b = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    agent = new http.Agent({ keepAlive: true, maxSockets: 20 });
  });
  afterAll(async () => {
    agent?.destroy();
    await b?.stop();
    await a?.stop();
    await db?.drop();
  });

  it("one token's budget is the same whatever node it hits", async () => {
    const token = await a.token('operator');
    const results = await flood(300, 20, (i) => request(i % 2 ? b.url : a.url, { from: '127.0.0.1', agent, token }));
    expect(count(results, (r) => r.status === 200)).toBe(100);
    expect(count(results, (r) => r.status === 429)).toBe(200);
  });

  it("one IP's failure budget is the same whatever node it hits", async () => {
    const results = await flood(200, 20, (i) => request(i % 2 ? b.url : a.url, { from: '127.0.0.4', agent, token: `hnd_wrong_${i}` }));
    expect(count(results, (r) => r.status === 401)).toBe(20);
    expect(count(results, (r) => r.status === 429)).toBe(180);
  });
});

async function metricValue(edge: string): Promise<number> {
  const m = await metrics.rateLimited.get();
  return m.values.find((v) => v.labels.edge === edge)?.value ?? 0;
}
