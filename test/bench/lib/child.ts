import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const CLIENTS_DIR = fileURLToPath(new URL('../clients/', import.meta.url));

/** A message between the bench runner and a client process. */
type Msg = { type: 'result'; value: unknown } | { type: 'error'; message: string } | { type: 'event'; value: unknown };

export interface ClientProcess<R> {
  proc: ChildProcess;
  /** Resolves with the client's result (rejects if it failed or exited without one). */
  result: Promise<R>;
  /** Sends a follow-up message to the client (e.g. "go", "report now"). */
  send(value: unknown): void;
  /** Resolves with the next `event` the client reports. */
  nextEvent<T = unknown>(): Promise<T>;
  kill(): Promise<void>;
}

/**
 * Starts `test/bench/clients/<name>.ts` in its own Node process (tsx loader) so the measuring
 * client never shares an event loop with the hub, and hands it `params` over IPC.
 */
export function startClient<R>(name: string, params: unknown, execArgv: string[] = []): ClientProcess<R> {
  const proc = spawn(process.execPath, [...execArgv, '--import', 'tsx', path.join(CLIENTS_DIR, `${name}.ts`)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env },
  });
  const events: unknown[] = [];
  const eventWaiters: Array<(v: unknown) => void> = [];
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const result = new Promise<R>((resolve, reject) => {
    proc.on('message', (m: Msg) => {
      if (m.type === 'result') resolve(m.value as R);
      else if (m.type === 'error') reject(new Error(`client ${name}: ${m.message}`));
      else {
        const w = eventWaiters.shift();
        if (w) w(m.value);
        else events.push(m.value);
      }
    });
    // 'close', not 'exit': a message sent just before exiting may still be on its way when 'exit' fires.
    proc.once('close', (code, signal) => reject(new Error(`client ${name} exited (${code ?? signal}) without a result`)));
  });
  result.catch(() => undefined); // observed by the caller; never an unhandled rejection
  proc.send({ type: 'params', value: params });
  return {
    proc,
    result,
    send: (value) => proc.send({ type: 'message', value }),
    nextEvent: <T>() => (events.length ? Promise.resolve(events.shift() as T) : new Promise<T>((resolve) => eventWaiters.push(resolve as (v: unknown) => void))),
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}

/** Runs a client to completion and returns its result. */
export async function runClient<R>(name: string, params: unknown): Promise<R> {
  const c = startClient<R>(name, params);
  try {
    return await c.result;
  } finally {
    await c.kill();
  }
}

/**
 * The client side: waits for its params, runs `main`, reports the result and exits.
 * `ctx.event` reports progress; `ctx.message()` waits for the runner's next message.
 */
export function serveClient<P, R>(main: (params: P, ctx: { event(value: unknown): void; message<T = unknown>(): Promise<T> }) => Promise<R>): void {
  const inbox: unknown[] = [];
  const waiters: Array<(v: unknown) => void> = [];
  const send = (m: Msg, done?: () => void) => process.send!(m, undefined, {}, () => done?.());
  process.on('message', (m: { type: 'params' | 'message'; value: unknown }) => {
    if (m.type === 'params') {
      main(m.value as P, {
        event: (value) => send({ type: 'event', value }),
        message: <T>() => (inbox.length ? Promise.resolve(inbox.shift() as T) : new Promise<T>((resolve) => waiters.push(resolve as (v: unknown) => void))),
      }).then(
        (value) => send({ type: 'result', value }, () => process.exit(0)),
        (err: unknown) => send({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) }, () => process.exit(1)),
      );
    } else {
      const w = waiters.shift();
      if (w) w(m.value);
      else inbox.push(m.value);
    }
  });
}
