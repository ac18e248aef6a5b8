import type { Socket } from 'socket.io-client';
import type { Ack, Frame, RunAssignment } from '@handoff/shared';
import { connect, emitAck } from './clients.js';

export { recordedText } from './recording.js';

type Verdict = { runId: string; keep: boolean; lastSeq: number };

/**
 * The worker side played by a socket client speaking the worker protocol, where a test
 * needs exact control of it (when it answers, what it resends, when it goes silent).
 * The hub, its database and the protocol are real.
 */
export class ScriptedWorker {
  readonly assigned: RunAssignment[] = [];
  readonly cancels: string[] = [];
  /** When it was told of each assignment (ms since the epoch). */
  readonly assignedAt = new Map<string, number>();
  disconnectReason: string | null = null;

  private constructor(
    readonly socket: Socket,
    /** Ack `run:assign` with ok (true), or never answer it (false: a silent worker). */
    ackAssign: boolean,
  ) {
    socket.on('run:assign', (run: RunAssignment, ack: (a: unknown) => void) => {
      this.assigned.push(run);
      this.assignedAt.set(run.runId, Date.now());
      if (ackAssign) ack({ ok: true, data: {} });
    });
    socket.on('run:cancel', ({ runId }: { runId: string }) => this.cancels.push(runId));
    socket.on('disconnect', (reason) => (this.disconnectReason = reason));
  }

  static async connect(hubUrl: string, token: string, opts: { ackAssign?: boolean } = {}): Promise<ScriptedWorker> {
    return new ScriptedWorker(await connect(hubUrl, '/worker', token), opts.ackAssign ?? true);
  }

  async hello(runs: string[] = [], capacity = 2): Promise<Verdict[]> {
    const ack = await emitAck<{ runs: Verdict[] }>(this.socket, 'worker:hello', { capacity, runs, version: 'scripted' });
    if (!ack.ok) throw new Error(`hello refused: ${ack.error.message}`);
    return ack.data.runs;
  }

  async heartbeat(activeRuns = 1): Promise<Ack<object>> {
    return emitAck(this.socket, 'worker:heartbeat', { activeRuns, shares: [] });
  }

  started(runId: string): Promise<Ack<object>> {
    return emitAck(this.socket, 'run:started', { runId });
  }

  output(runId: string, frames: Frame[]): Promise<Ack<{ lastSeq: number }>> {
    return emitAck(this.socket, 'run:output', { runId, frames });
  }

  exited(runId: string, exitCode: number): Promise<Ack<object>> {
    return emitAck(this.socket, 'run:exited', { runId, exitCode });
  }

  close(): void {
    this.socket.close();
  }
}

/** Numbered frames `from..to`, each one line: `line <n>\r\n`. */
export function numberedFrames(from: number, to: number): Frame[] {
  return Array.from({ length: to - from + 1 }, (_, i) => ({ seq: from + i, t: (from + i) * 5, data: `line ${from + i}\r\n` }));
}

/** The numbers of `line <n>` lines in a text, in order (duplicates kept). */
export function lineNumbers(text: string): number[] {
  return [...text.matchAll(/line (\d+)\r?\n/g)].map((m) => Number(m[1]));
}
