import { spawn, type ChildProcess } from 'node:child_process';
import { Socket } from 'node:net';
import { freePort, waitFor } from './ports.js';

export interface RedisServer {
  /** `redis://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** Stops the server (SIGKILL by default: an outage, not a goodbye); resolves when it is gone. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port (empty: nothing is persisted). */
  start(): Promise<void>;
  /** Stops it for good. */
  destroy(): Promise<void>;
}

function pong(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = new Socket();
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.once('error', () => done(false));
    s.connect(port, '127.0.0.1', () => s.write('PING\r\n'));
    s.once('data', (d) => done(d.toString().startsWith('+PONG')));
  });
}

/** A redis-server of the test's own on a free port (no persistence), never the machine's shared one. */
export async function startRedisServer(): Promise<RedisServer> {
  const port = await freePort();
  let proc: ChildProcess | null = null;
  const start = async () => {
    const p = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    proc = p;
    await waitFor(`redis-server on ${port}`, async () => {
      if (p.exitCode !== null) throw new Error(`redis-server on ${port} exited with ${p.exitCode}`);
      return pong(port);
    }, 10_000);
  };
  const stop = async (signal: NodeJS.Signals = 'SIGKILL') => {
    const p = proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill(signal);
    await gone;
    proc = null;
  };
  await start();
  return { url: `redis://127.0.0.1:${port}`, port, start, stop, destroy: () => stop('SIGKILL') };
}
