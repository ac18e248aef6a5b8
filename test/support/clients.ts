import { io, type Socket } from 'socket.io-client';
import type { Ack, Frame, Run } from '@handoff/shared';

/** A REST call with a bearer token; returns status and parsed JSON. */
export async function api(
  baseUrl: string,
  token: string | null,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${baseUrl}${path}`, { method, headers, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON: keep the text */
  }
  return { status: res.status, body: parsed };
}

/** Connects a socket to a namespace; resolves once connected, rejects with the handshake error. */
export function connect(baseUrl: string, namespace: string, token: string | undefined): Promise<Socket> {
  const socket = io(`${baseUrl}${namespace}`, { transports: ['websocket'], auth: token ? { token } : {}, reconnection: false, forceNew: true });
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', (err) => {
      socket.close();
      reject(err);
    });
  });
}

/** Emits with an ack and resolves with the ack envelope. */
export function emitAck<T = any>(socket: Socket, event: string, ...args: unknown[]): Promise<Ack<T>> {
  return socket.timeout(10_000).emitWithAck(event, ...args) as Promise<Ack<T>>;
}

/** A dashboard viewer that records run updates and terminal frames as they arrive. */
export class Viewer {
  readonly runs = new Map<string, Run>();
  /** Live frames per run, in arrival order. */
  readonly live = new Map<string, Frame[]>();
  private waiters: Array<() => void> = [];

  constructor(readonly socket: Socket) {
    // Any push may satisfy a waiter's predicate; re-check after its own handlers ran.
    socket.onAny(() => setImmediate(() => this.notify()));
    socket.on('run:updated', (run: Run) => {
      // As the dashboard does: pushes from concurrent publishers can overtake each other; keep the newer revision.
      const known = this.runs.get(run.id);
      if (!known || run.revision >= known.revision) this.runs.set(run.id, run);
      this.notify();
    });
    socket.on('term:frame', ({ runId, frames }: { runId: string; frames: Frame[] }) => {
      const list = this.live.get(runId) ?? [];
      list.push(...frames);
      this.live.set(runId, list);
      this.notify();
    });
  }

  static async connect(baseUrl: string, token: string): Promise<Viewer> {
    const v = new Viewer(await connect(baseUrl, '/dashboard', token));
    const ack = await emitAck(v.socket, 'runs:subscribe', {});
    if (!ack.ok) throw new Error(ack.error.message);
    return v;
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves when `predicate` holds, re-checked on every event received; rejects after `ms`. */
  async until<T>(what: string, predicate: () => T | undefined | false, ms = 30_000): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      const value = predicate();
      if (value) return value;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  untilStatus(runId: string, statuses: string[], ms?: number): Promise<Run> {
    return this.until(`run ${runId} in ${statuses.join('|')}`, () => {
      const r = this.runs.get(runId);
      return r && statuses.includes(r.status) ? r : undefined;
    }, ms);
  }

  close(): void {
    this.socket.close();
  }
}

/** Concatenates frames in seq order, asserting there is no gap and no duplicate. */
export function joinFrames(frames: Frame[]): string {
  const sorted = [...frames].sort((a, b) => a.seq - b.seq);
  sorted.forEach((f, i) => {
    if (i > 0 && f.seq !== sorted[i - 1]!.seq + 1) throw new Error(`frame sequence broken at seq ${f.seq} (previous ${sorted[i - 1]!.seq})`);
  });
  return sorted.map((f) => f.data).join('');
}

/** Re-checks an async condition (e.g. a REST read or a file) every 50 ms until it holds; rejects after `ms`. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined | false>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
