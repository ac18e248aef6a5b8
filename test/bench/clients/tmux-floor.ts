import { execFile } from 'node:child_process';
import { createReadStream, mkdtempSync, rmSync, type ReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * A plain tmux server (private socket, no config) whose pane output is captured by
 * `pipe-pane` into a FIFO read here — the worker's own capture, without the worker.
 */
export class PlainTmux {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'handoff-bench-tmux-'));
  readonly socket = path.join(this.dir, 'tmux.sock');
  private readonly fifo = path.join(this.dir, 'out.fifo');
  private text = '';
  private waiters: Array<() => void> = [];
  private reader: ReadStream | null = null;

  tmux(args: string[]): Promise<unknown> {
    return run('tmux', ['-S', this.socket, ...args]);
  }

  /**
   * Starts the server with `command` in its pane. Like the worker's wrapper, the pane waits
   * for a `go` signal so the capture is attached before the first byte; `go()` sends it.
   */
  async start(command: string): Promise<{ go(): Promise<unknown> }> {
    await run('mkfifo', [this.fifo]);
    const reader = (this.reader = createReadStream(this.fifo, { encoding: 'utf8' }));
    reader.on('data', (d: string | Buffer) => {
      this.text += d.toString();
      for (const w of this.waiters.splice(0)) w();
    });
    reader.on('error', () => undefined); // the server is being killed
    const pane = `tmux -S ${this.socket} wait-for go; ${command}`;
    await this.tmux(['-f', '/dev/null', 'new-session', '-d', '-s', 's', '-x', '120', '-y', '40', 'sh', '-c', pane, ';', 'pipe-pane', '-t', 's', '-O', `exec cat > ${this.fifo}`]);
    return { go: () => this.tmux(['wait-for', '-S', 'go']) };
  }

  /** Resolves once the captured output (from `from` on) contains `needle`; returns the offset after it. */
  async until(needle: string, from = 0, ms = 10_000): Promise<number> {
    const deadline = Date.now() + ms;
    for (;;) {
      const at = this.text.indexOf(needle, from);
      if (at >= 0) return at + needle.length;
      if (Date.now() > deadline) throw new Error(`tmux floor: no "${needle}" in the pane output`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 100);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  get length(): number {
    return this.text.length;
  }

  async stop(): Promise<void> {
    await this.tmux(['kill-server']).catch(() => undefined);
    this.reader?.destroy();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Plain tmux start → first output, in ms: new server + pane + pipe-pane, timed until the pane's first line arrives. */
export async function tmuxFirstOutput(): Promise<number> {
  const t = new PlainTmux();
  try {
    const t0 = performance.now();
    const { go } = await t.start('echo first-output; sleep 5');
    await go();
    await t.until('first-output');
    return performance.now() - t0;
  } finally {
    await t.stop();
  }
}

/** `tmux send-keys` → the echo in the pipe-pane output, in ms, `n` times (a `cat` in the pane). */
export async function tmuxKeystrokes(n: number, warmup = 5): Promise<number[]> {
  const t = new PlainTmux();
  try {
    const { go } = await t.start('exec cat');
    await go();
    const out: number[] = [];
    for (let i = 0; i < warmup + n; i++) {
      const token = `k${i}x`;
      const from = t.length;
      const t0 = performance.now();
      await t.tmux(['send-keys', '-t', 's', '-l', token]);
      await t.until(token, Math.max(0, from - token.length));
      if (i >= warmup) out.push(performance.now() - t0);
      if (i % 20 === 19) await t.tmux(['send-keys', '-t', 's', 'Enter']);
    }
    return out;
  } finally {
    await t.stop();
  }
}
