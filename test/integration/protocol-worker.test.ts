import { randomBytes } from 'node:crypto';
import { io, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, eventually } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { recordedText } from '../support/recording.js';

/**
 * A worker written from docs/protocol.md alone: plain socket.io-client, no import of the
 * worker package and no shared schemas — only the events, payloads and rules the document
 * states (handshake auth, hello, heartbeat with `shares`, the ack envelope, frame
 * sequencing and resend from the answered `lastSeq`). It "runs" a command by producing its
 * output itself.
 */
class DocWorker {
  readonly socket: Socket;
  readonly assigned: Array<{ runId: string; command: unknown }> = [];
  hello: any;
  private heartbeat: NodeJS.Timeout | null = null;

  constructor(url: string, token: string) {
    this.socket = io(`${url}/worker`, { transports: ['websocket'], auth: { token }, reconnection: false, forceNew: true });
    // §5.6: accept an assignment with the canonical envelope.
    this.socket.on('run:assign', (payload: { runId: string; command: unknown }, ack: (r: unknown) => void) => {
      this.assigned.push(payload);
      ack({ ok: true, data: {} });
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('connect_error', reject);
    });
    this.hello = await this.call('worker:hello', { capacity: 1, runs: [], version: 'doc-worker/1' });
    // §5.4: heartbeat every heartbeatIntervalMs, listing the (no) share processes alive here.
    this.heartbeat = setInterval(() => void this.call('worker:heartbeat', { activeRuns: this.assigned.length, shares: [] }).catch(() => {}), this.hello.heartbeatIntervalMs);
  }

  /** §3: every event is acked `{ok: true, data}` or `{ok: false, error}`. */
  async call(event: string, payload: unknown): Promise<any> {
    const ack = (await this.socket.timeout(10_000).emitWithAck(event, payload)) as { ok: boolean; data?: unknown; error?: { code: string; message: string } };
    if (!ack.ok) throw Object.assign(new Error(`${event}: ${ack.error!.code} ${ack.error!.message}`), { code: ack.error!.code });
    return ack.data;
  }

  close(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.socket.close();
  }
}

describe('a minimal worker implemented from docs/protocol.md', () => {
  let hub: TestHub;
  let worker: DocWorker;
  let operator: string;

  beforeAll(async () => {
    hub = await startTestHub();
    operator = await hub.token('operator');
  });
  afterAll(async () => {
    worker?.close();
    await hub?.stop();
  });

  it('handshake auth is enforced; before hello nothing else is accepted', async () => {
    const anon = io(`${hub.url}/worker`, { transports: ['websocket'], auth: {}, reconnection: false, forceNew: true });
    const err = await new Promise<Error & { data?: { code: string } }>((resolve) => anon.once('connect_error', resolve));
    expect(err.data?.code).toBe('UNAUTHENTICATED');
    anon.close();
    const early = new DocWorker(hub.url, await hub.workerToken(`doc-early-${randomBytes(3).toString('hex')}`));
    await new Promise<void>((resolve) => early.socket.once('connect', () => resolve()));
    await expect(early.call('worker:heartbeat', { activeRuns: 0, shares: [] })).rejects.toMatchObject({ code: 'STATE_CONFLICT' });
    early.close();
  });

  it('hello, heartbeat, run:assign, run:started, run:output (with a gap recovered by resend), run:exited → succeeded with every line recorded once', async () => {
    worker = new DocWorker(hub.url, await hub.workerToken(`doc-${randomBytes(3).toString('hex')}`));
    await worker.start();
    expect(worker.hello).toMatchObject({ workerId: expect.any(String), heartbeatIntervalMs: expect.any(Number), abandonAfterMs: expect.any(Number), runs: [] });

    const created = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { argv: ['doc-worker-task'] }, liveSession: false });
    expect(created.status).toBe(201);
    const runId = created.body.id as string;
    await eventually('run:assign', async () => worker.assigned.find((a) => a.runId === runId));
    await worker.call('run:started', { runId });

    const frames = Array.from({ length: 6 }, (_, i) => ({ seq: i + 1, t: i * 10, data: `line-${i + 1}\r\n` }));
    // In order: the answer's lastSeq is the highest seq recorded.
    expect(await worker.call('run:output', { runId, frames: frames.slice(0, 2) })).toEqual({ lastSeq: 2 });
    // Frame 3 "lost": 4..6 arrive after a gap; the hub keeps nothing past the gap and says so.
    expect(await worker.call('run:output', { runId, frames: frames.slice(3) })).toEqual({ lastSeq: 2 });
    // Resend from lastSeq + 1 (a duplicate of 2 included is harmless).
    expect(await worker.call('run:output', { runId, frames: frames.slice(1) })).toEqual({ lastSeq: 6 });
    await worker.call('run:exited', { runId, exitCode: 0 });

    const run = await eventually('succeeded', async () => {
      const r = await api(hub.url, operator, 'GET', `/api/task-runs/${runId}`);
      return r.body.status === 'succeeded' ? r.body : undefined;
    });
    expect(run).toMatchObject({ status: 'succeeded', exitCode: 0, workerId: worker.hello.workerId });
    expect(await recordedText(hub.url, operator, runId)).toBe(frames.map((f) => f.data).join('').replace(/\r\n/g, '\n'));

    // Reports about runs that are not this worker's are refused.
    await expect(worker.call('run:output', { runId: '00000000-0000-4000-8000-000000000000', frames: [frames[0]] })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    // A bad payload is VALIDATION and the connection stays up.
    await expect(worker.call('run:output', { runId, frames: [] })).rejects.toMatchObject({ code: 'VALIDATION' });
    expect(worker.socket.connected).toBe(true);
    // Socket handler log lines name the socket and who is on it.
    const lines = hub.logs().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.find((l) => l.msg === 'socket event refused' && l.event === 'run:output' && l.code === 'VALIDATION')).toMatchObject({
      socketId: worker.socket.id, nsp: '/worker', principalKind: 'worker', principalId: worker.hello.workerId,
    });
  });
});
