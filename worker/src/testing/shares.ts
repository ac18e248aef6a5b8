import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';
import type { Ack } from '@handoff/shared';
import type { HubLink, ReportEvent } from '../hub-link.js';
import { TmuxRun } from '../tmux-run.js';

// Stand-ins for the two share providers: no tmate relay is reachable and upterm is not
// installed on the test machines (see the header of each script). Real tmux and the
// real tmate binary are used wherever a test does not need a relay to answer.
export const FAKE_TMATE = fileURLToPath(new URL('../../../test/fixtures/fake-tmate', import.meta.url));
export const FAKE_UPTERM = fileURLToPath(new URL('../../../test/fixtures/fake-upterm', import.meta.url));
export const TMUX = '/usr/bin/tmux';

/** Starts a real run in tmux (a long `sleep` carrying `marker`) to share. */
export function startRun(runsDir: string, marker: string): Promise<TmuxRun> {
  return TmuxRun.start({
    runId: randomUUID(),
    runsDir,
    command: { argv: ['sleep', marker] },
    cwd: null,
    env: { PATH: process.env.PATH, LANG: 'C.UTF-8' },
    cols: 120,
    rows: 32,
    tmuxBin: TMUX,
    onOutput: () => undefined,
    logger: pino({ level: 'silent' }),
    killGraceMs: 300,
  });
}

/** `tmux display -p FORMAT` against a run's server (e.g. its window size, its clients). */
export function tmuxQuery(socket: string, args: string[]): string {
  try {
    return execFileSync(TMUX, ['-S', socket, ...args], { encoding: 'utf8' }).trim();
  } catch {
    return '';
  }
}

/** A TCP port nothing listens on (bound, then released). */
export function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Observes until `check` holds (bounded); throws naming `what` otherwise. */
export async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A pino logger at the most verbose level whose every line the test can read back. */
export function capturedLogger(): { logger: Logger; text: () => string } {
  let text = '';
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      text += chunk.toString();
      done();
    },
  });
  return { logger: pino({ level: 'trace' }, sink), text: () => text };
}

export interface SentReport {
  event: ReportEvent;
  payload: any;
  ack: (a: Ack<any> | undefined) => void;
}

/** A hub link whose acks the test answers by hand. */
export class ManualLink implements HubLink {
  ready = true;
  sent: SentReport[] = [];
  send(event: ReportEvent, payload: unknown, onAck: (a: Ack<any> | undefined) => void): void {
    this.sent.push({ event, payload, ack: onAck });
  }
  take(): SentReport[] {
    return this.sent.splice(0);
  }
}
