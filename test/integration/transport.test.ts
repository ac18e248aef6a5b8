import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { io } from 'socket.io-client';
import { api, connect, emitAck } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';

const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil((p / 100) * xs.length) - 1)]!;

describe('transport hygiene and abuse resistance', () => {
  let hub: TestHub;
  let flooder: string;
  let other: string;

  beforeAll(async () => {
    hub = await startTestHub({
      env: { RATE_LIMIT_REST_PER_SEC: '2', RATE_LIMIT_REST_BURST: '5', RATE_LIMIT_SOCKET_PER_SEC: '5', RATE_LIMIT_SOCKET_BURST: '10', HANDOFF_ALLOWED_ORIGINS: 'https://ops.example' },
    });
    flooder = await hub.token('observer');
    other = await hub.token('observer');
  });
  afterAll(async () => {
    await hub?.stop();
  });

  it('sends security headers', async () => {
    const res = await fetch(`${hub.url}/healthz`);
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('content-security-policy')).toContain("default-src 'self'");
    expect(res.headers.get('x-powered-by')).toBeNull();
  });

  it('rate-limits REST per token with 429 RATE_LIMITED and Retry-After; other tokens are unaffected', async () => {
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 8; i++) {
      const res = await fetch(`${hub.url}/api/task-runs`, { headers: { authorization: `Bearer ${flooder}` } });
      statuses.push(res.status);
      if (res.status === 429) {
        retryAfter = res.headers.get('retry-after');
        expect((await res.json()).error.code).toBe('RATE_LIMITED');
      }
    }
    expect(statuses.slice(0, 5)).toEqual([200, 200, 200, 200, 200]);
    expect(statuses.slice(5)).toContain(429);
    expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
    expect((await api(hub.url, other, 'GET', '/api/task-runs')).status).toBe(200);
  });

  it('rate-limits socket events per connection; a flood does not starve another client', async () => {
    const a = await connect(hub.url, '/dashboard', flooder);
    const b = await connect(hub.url, '/dashboard', other);
    const acks = await Promise.all(Array.from({ length: 30 }, () => emitAck(a, 'runs:subscribe', {})));
    const limited = acks.filter((x) => !x.ok);
    expect(limited.length).toBeGreaterThan(0);
    expect(limited[0]).toMatchObject({ ok: false, error: { code: 'RATE_LIMITED', details: { retryAfterMs: expect.any(Number) } } });
    expect(a.connected).toBe(true);

    // b's round trips while a floods (which is refused cheaply) vs. b alone.
    const rtt = async (n: number) => {
      const xs: number[] = [];
      for (let i = 0; i < n; i++) {
        const t = performance.now();
        expect((await emitAck(b, 'runs:subscribe', {})).ok).toBe(true);
        xs.push(performance.now() - t);
        await new Promise((r) => setTimeout(r, 220)); // stay inside b's own limit
      }
      return xs;
    };
    const alone = await rtt(8);
    let flooding = true;
    const flood = (async () => {
      while (flooding) await Promise.all(Array.from({ length: 50 }, () => emitAck(a, 'runs:subscribe', {})));
    })();
    const during = await rtt(8);
    flooding = false;
    await flood;
    console.log(`other client's ack round trip: alone p50 ${percentile(alone, 50).toFixed(2)} ms; during a flood p50 ${percentile(during, 50).toFixed(2)} ms, max ${Math.max(...during).toFixed(2)} ms (ratio ${(percentile(during, 50) / percentile(alone, 50)).toFixed(2)})`);
    a.close();
    b.close();
  });

  it('refuses dashboard sockets from a foreign browser origin', async () => {
    const attempt = (origin: string) =>
      new Promise<string>((resolve) => {
        const s = io(`${hub.url}/dashboard`, { transports: ['websocket'], auth: { token: other }, extraHeaders: { origin }, reconnection: false, forceNew: true });
        s.once('connect', () => {
          s.close();
          resolve('connected');
        });
        s.once('connect_error', (err: Error & { data?: { code: string } }) => {
          s.close();
          resolve(err.data?.code ?? err.message);
        });
      });
    expect(await attempt('https://evil.example')).toBe('FORBIDDEN');
    expect(await attempt('https://ops.example')).toBe('connected');
    expect(await attempt(hub.url)).toBe('connected');
  });
});
