import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';

export interface TmuxResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs one tmux client command against a private server (`-S socket`). Never rejects
 * on a non-zero exit: callers decide which failures matter (many are expected, e.g.
 * `kill-server` on a server that is already gone).
 */
export function tmux(
  bin: string,
  socket: string,
  args: readonly string[],
  opts: { env?: Record<string, string | undefined>; timeoutMs?: number } = {},
): Promise<TmuxResult> {
  return new Promise((resolve) => {
    const child = spawn(bin, ['-S', socket, ...args], {
      env: opts.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: opts.timeoutMs ?? 10_000,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err) => resolve({ code: null, stdout, stderr: stderr + err.message }));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * Absolute path of an executable on PATH. The run's wrapper script calls tmux with the
 * run's own environment, whose PATH may not contain tmux, so it gets an absolute path.
 */
export function findExecutable(name: string, pathVar: string | undefined): string | null {
  if (isAbsolute(name)) return isExecutable(name) ? name : null;
  for (const dir of (pathVar ?? '/usr/local/bin:/usr/bin:/bin').split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  return null;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
