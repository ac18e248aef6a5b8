import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { io, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Ack, Frame, Run } from '@handoff/shared';
import { api, eventually, joinFrames } from '../support/clients.js';
import { createTestDatabase, REDIS_URL, type TestDatabase } from '../support/db.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { expectNumberedLines, numberedLinesScript, recordedText } from '../support/recording.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => existsSync(p));
const LINES = 150;

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/**
 * Our own nginx, configured from docker/nginx.conf (the compose load balancer) with only
 * the addresses swapped: its upstreams are the two test hubs, it listens on a free port,
 * and pid, logs and temp files live in a temp dir. Never the system service.
 */
async function startNginx(upstreams: { a: number; b: number }): Promise<{ url: string; dir: string; proc: ChildProcess; log: () => string; stop: () => Promise<void> }> {
  if (!NGINX) throw new Error('nginx is not installed (scripts/setup.sh test installs nginx-light)');
  const dir = mkdtempSync(path.join(tmpdir(), 'handoff-nginx-'));
  chmodSync(dir, 0o755);
  for (const t of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(path.join(dir, t), { mode: 0o777 });
  const port = await freePort();
  const source = readFileSync(path.resolve('docker/nginx.conf'), 'utf8');
  const conf = source
    .replace('worker_processes auto;', `${process.getuid?.() === 0 ? 'user root;\n' : ''}worker_processes 1;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log info;`)
    .replace('http {', `http {\n  client_body_temp_path ${dir}/body;\n  proxy_temp_path ${dir}/proxy;\n  fastcgi_temp_path ${dir}/fastcgi;\n  uwsgi_temp_path ${dir}/uwsgi;\n  scgi_temp_path ${dir}/scgi;`)
    .replace('access_log /dev/stdout handoff;', `access_log ${dir}/access.log handoff;`)
    .replace('hub-a:3000', `127.0.0.1:${upstreams.a}`)
    .replace('hub-b:3000', `127.0.0.1:${upstreams.b}`)
    .replace('listen 8080;', `listen 127.0.0.1:${port};`);
  expect(conf).not.toMatch(/hub-[ab]:3000|listen 8080/);
  writeFileSync(path.join(dir, 'nginx.conf'), conf);
  const proc = spawn(NGINX, ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'error.log'), '-g', 'daemon off;'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  await eventually('nginx listening', async () => fetch(`${url}/healthz`).then((r) => r.ok, () => false), 10_000).catch((err: Error) => {
    throw new Error(`${err.message}: ${out}`);
  });
  const read = (f: string) => (existsSync(path.join(dir, f)) ? readFileSync(path.join(dir, f), 'utf8') : '');
  return {
    url, dir, proc,
    log: () => `${read('access.log')}\n${read('error.log')}\n${out}`,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGQUIT');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A dashboard as the browser runs it: reconnects by itself, re-subscribes, resumes frames after the last seq it has. */
class ReconnectingDashboard {
  readonly socket: Socket;
  readonly frames = new Map<number, Frame>();
  run: Run | null = null;
  connects = 0;

  constructor(url: string, token: string, readonly runId: string) {
    // A browser's Origin for a page served through the proxy: the hub must see the proxy's Host.
    this.socket = io(`${url}/dashboard`, { transports: ['websocket'], auth: { token }, extraHeaders: { origin: url }, reconnectionDelay: 100, reconnectionDelayMax: 500, forceNew: true });
    this.socket.on('connect', () => void this.subscribe());
    this.socket.on('run:updated', (run: Run) => {
      if (run.id === runId && (!this.run || run.revision >= this.run.revision)) this.run = run;
    });
    this.socket.on('term:frame', ({ runId: id, frames }: { runId: string; frames: Frame[] }) => {
      if (id === runId) for (const f of frames) this.frames.set(f.seq, f);
    });
  }

  private async subscribe(): Promise<void> {
    this.connects += 1;
    const sub = (await this.socket.timeout(10_000).emitWithAck('run:subscribe', { runId: this.runId })) as Ack<{ run: Run }>;
    if (sub.ok) this.run = sub.data.run;
    const afterSeq = Math.max(0, ...this.frames.keys());
    const term = (await this.socket.timeout(10_000).emitWithAck('term:subscribe', { runId: this.runId, afterSeq })) as Ack<{ frames: Frame[] }>;
    if (term.ok) for (const f of term.data.frames) this.frames.set(f.seq, f);
  }

  text(): string {
    return joinFrames([...this.frames.values()]).replace(/\r\n/g, '\n');
  }
}

describe('through nginx: two hubs behind the compose load balancer config; one hub stops', () => {
  let db: TestDatabase;
  let a: TestHub;
  let b: TestHub;
  let lb: Awaited<ReturnType<typeof startNginx>>;
  let worker: WorkerProcess;
  let dashboard: ReconnectingDashboard | undefined;
  const stopped = new Set<TestHub>();

  beforeAll(async () => {
    db = await createTestDatabase();
    const env = { REDIS_KEY_PREFIX: `handoff-nginx-${randomBytes(4).toString('hex')}` };
    a = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    b = await startTestHub({ databaseUrl: db.url, redisUrl: REDIS_URL, env });
    lb = await startNginx({ a: a.port, b: b.port });
  });
  afterAll(async () => {
    dashboard?.socket.close();
    await worker?.stop();
    await lb?.stop();
    for (const hub of [a, b]) if (hub && !stopped.has(hub)) await hub.stop();
    await db?.drop();
  });

  it('a worker and a dashboard connect via the proxy; the hub the worker is on stops; both end up on the other; the run succeeds with every line recorded once', async () => {
    const operator = await a.token('operator');
    worker = startWorker({ hubUrl: lb.url, token: await a.workerToken(`nginx-${randomBytes(3).toString('hex')}`), capacity: 2 });
    const workerSockets = (hub: TestHub) => hub.io.of('/worker').sockets.size;
    await eventually('worker connected through nginx', async () => workerSockets(a) + workerSockets(b) === 1);

    const created = await api(lb.url, operator, 'POST', '/api/task-runs', { command: { script: numberedLinesScript('nx', LINES, 0.04) }, liveSession: true });
    expect(created.status).toBe(201);
    const runId = created.body.id as string;
    dashboard = new ReconnectingDashboard(lb.url, operator, runId);
    await eventually('dashboard sees output', async () => dashboard!.frames.size > 0 && dashboard!.text().includes('nx-20\n'), 30_000);
    expect(dashboard.text()).not.toContain(`nx-${LINES}\n`); // the hub stops mid-run

    // Stop the node holding the worker (and, if it is there too, the dashboard).
    const [victim, survivor] = workerSockets(a) === 1 ? [a, b] : [b, a];
    const dashboardOnVictim = victim.io.of('/dashboard').sockets.size > 0;
    stopped.add(victim);
    await victim.stop();

    await eventually('worker and dashboard on the surviving node', async () => workerSockets(survivor) === 1 && survivor.io.of('/dashboard').sockets.size >= 1, 20_000);
    const finished = await eventually('run finished', async () => {
      const r = await api(lb.url, operator, 'GET', `/api/task-runs/${runId}`);
      return ['succeeded', 'failed', 'lost', 'cancelled'].includes(r.body.status) ? (r.body as Run) : undefined;
    }, 60_000);
    expect(finished).toMatchObject({ status: 'succeeded', exitCode: 0 });

    // The recording (fetched through the proxy) has every line exactly once, in order.
    expectNumberedLines(await recordedText(lb.url, operator, runId), 'nx', LINES);
    // So does what the dashboard showed: no gap (joinFrames checks), no duplicate.
    await eventually('dashboard caught up', async () => dashboard!.text().includes(`nx-${LINES}\n`), 15_000);
    expectNumberedLines(dashboard.text(), 'nx', LINES);
    if (dashboardOnVictim) expect(dashboard.connects).toBeGreaterThanOrEqual(2);
    await eventually('dashboard saw the run finish', async () => dashboard!.run?.status === 'succeeded');

    // nginx carried the traffic to both nodes, and the request ids it passed came back.
    const log = lb.log();
    expect(log).toContain(`127.0.0.1:${a.port}`);
    expect(log).toContain(`127.0.0.1:${b.port}`);
    const rid = `lb-${randomBytes(4).toString('hex')}`;
    const res = await fetch(`${lb.url}/healthz`, { headers: { 'x-request-id': rid } });
    expect(res.headers.get('x-request-id')).toBe(rid);
  });
});
