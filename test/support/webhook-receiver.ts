import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One POST a webhook receiver got: headers, the raw body as sent, and whether it was answered 2xx. */
export interface Received {
  event: string;
  delivery: string;
  signature: string;
  raw: string;
  body: Record<string, any>;
  at: number;
  /** Set when the receiver answered it 2xx (a held request the sender gave up on never is, nor one answered `status` ≥ 300). */
  answered: boolean;
}

export interface WebhookReceiver {
  url: string;
  port: number;
  /** Every request that arrived, in order (answered or not). */
  got: Received[];
  /** Requests answered 2xx: the deliveries the sender may count as done. */
  answered(): Received[];
  /** While true, requests are held unanswered (the sender sees a hung endpoint); `release()` ends that. */
  hold: boolean;
  release(): void;
  close(): Promise<void>;
}

/**
 * A plain HTTP (no TLS) receiver that records every POST; `delayMs` slows its answers, `hold`
 * keeps them waiting until `release()`, and `status` is what it answers (default 204; e.g.
 * 500 for a failing endpoint).
 */
export async function startReceiver(opts: { port?: number; delayMs?: number; hold?: boolean; status?: number } = {}): Promise<WebhookReceiver> {
  const got: Received[] = [];
  const held: Array<() => void> = [];
  const sockets = new Set<import('node:net').Socket>();
  const state = { hold: opts.hold ?? false };
  const status = opts.status ?? 204;
  const answer = (r: Received, res: ServerResponse) => {
    if (res.destroyed) return; // the sender is gone (killed, or timed out): nothing was answered
    res.writeHead(status).end(() => (r.answered = status >= 200 && status < 300));
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const r: Received = {
        event: String(req.headers['x-handoff-event']),
        delivery: String(req.headers['x-handoff-delivery']),
        signature: String(req.headers['x-handoff-signature']),
        raw,
        body: JSON.parse(raw) as Record<string, any>,
        at: Date.now(),
        answered: false,
      };
      got.push(r);
      if (state.hold) held.push(() => answer(r, res));
      else setTimeout(() => answer(r, res), opts.delayMs ?? 0);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', resolve));
  const actual = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${actual}/hook`,
    port: actual,
    got,
    answered: () => got.filter((r) => r.answered),
    get hold() {
      return state.hold;
    },
    set hold(v: boolean) {
      state.hold = v;
    },
    release() {
      state.hold = false;
      for (const go of held.splice(0)) go();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A port nothing listens on (yet): a receiver that is down. */
export async function downPort(): Promise<number> {
  const probe = await startReceiver();
  await probe.close();
  return probe.port;
}

/**
 * The documented check (docs/webhooks.md), written from the docs rather than imported from
 * the hub: HMAC-SHA256 of "<t>.<raw body>" keyed with the secret, in constant time, and t
 * within the replay window.
 */
export function verifySignature(secret: string, header: string, raw: string, windowS = 300): boolean {
  const parts = Object.fromEntries(header.split(',').map((p) => p.split('=', 2) as [string, string]));
  const t = Number(parts.t);
  if (!Number.isInteger(t) || Math.abs(Date.now() / 1000 - t) > windowS || !parts.v1) return false;
  const expected = createHmac('sha256', secret).update(`${t}.${raw}`).digest();
  const given = Buffer.from(parts.v1, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}
