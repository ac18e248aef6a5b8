import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BENCH_HUB_ENV } from './hubs.js';

const HUB_MAIN = path.resolve('server/src/main.ts');

/** A free TCP port on 127.0.0.1 (the hub process is told its port, so the bench knows it). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as AddressInfo;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/** Resident set size of a process, in KiB (from /proc). */
export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/** CPU time (user + system) a process has used so far, in ms (from /proc, clock ticks of 10 ms). */
export function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/**
 * A full garbage collection in the process whose inspector listens on `port` (started with
 * `--inspect=127.0.0.1:<port>`), through the DevTools protocol: memory it holds is then what
 * is live, not garbage the collector has not come to yet.
 */
export async function collectGarbage(port: number): Promise<void> {
  const [target] = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as Array<{ webSocketDebuggerUrl: string }>;
  if (!target) throw new Error(`no inspector target on port ${port}`);
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  try {
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => ws.send(JSON.stringify({ id: 1, method: 'HeapProfiler.collectGarbage' }));
      ws.onmessage = (m) => ((JSON.parse(String(m.data)) as { id?: number }).id === 1 ? resolve() : undefined);
      ws.onerror = () => reject(new Error(`inspector on port ${port} failed`));
    });
  } finally {
    ws.close();
  }
}

export interface HubProcess {
  url: string;
  proc: ChildProcess;
  /** ms from spawn to the first `GET /healthz` answered 200. */
  startMs: number;
  output(): string;
  stop(): Promise<void>;
}

/**
 * The hub as it runs in production: its own process (`node --import tsx server/src/main.ts`),
 * so its memory and CPU are its own. Resolves once `/healthz` answers 200.
 */
export async function startHubProcess(opts: { databaseUrl: string; env?: Record<string, string>; /** Opens the inspector on this port (see collectGarbage). */ inspectPort?: number }): Promise<HubProcess> {
  const port = await freePort();
  const dataDir = mkdtempSync(path.join(tmpdir(), 'handoff-bench-hub-'));
  const t0 = performance.now();
  const inspect = opts.inspectPort ? [`--inspect=127.0.0.1:${opts.inspectPort}`] : [];
  const proc = spawn(process.execPath, [...inspect, '--import', 'tsx', HUB_MAIN], {
    env: {
      ...process.env,
      ...BENCH_HUB_ENV,
      PORT: String(port),
      DATABASE_URL: opts.databaseUrl,
      HANDOFF_DATA_DIR: dataDir,
      LOG_LEVEL: 'warn',
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  proc.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    const killer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(killer);
    rmSync(dataDir, { recursive: true, force: true });
  };
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null) {
      await stop();
      throw new Error(`hub process exited (${proc.exitCode}): ${log.slice(-2000)}`);
    }
    const ok = await fetch(`${url}/healthz`).then((r) => r.status === 200, () => false);
    if (ok) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`hub process not healthy in 60 s: ${log.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return { url, proc, startMs: performance.now() - t0, output: () => log, stop };
}
