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
 * `kill-server` on a server that is already gone). tmate takes the same CLI.
 */
export function tmux(bin: string, socket: string, args: readonly string[], opts: CommandOptions = {}): Promise<TmuxResult> {
  return runCommand(bin, ['-S', socket, ...args], opts);
}

export interface CommandOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Kill the command (SIGTERM) after this many ms; it then resolves with code null. Default 10 000. */
  timeoutMs?: number;
  /** Kills the command when aborted; it then resolves with code null. */
  signal?: AbortSignal;
}

/**
 * A directory as tmux's `-c start-directory` takes it. tmux expands that argument as a
 * format, where `#(…)` runs a shell command: a directory named `#(cmd)` — which the agent
 * can make and cd into — would run `cmd` from the tmux server, outside a hard pause. `##`
 * is a literal `#`. And tmux reads an argument ending in `;` as a command separator: the
 * directory keeps its meaning with a trailing `/`.
 */
export function tmuxStartDir(path: string): string {
  const literal = path.replaceAll('#', '##');
  return literal.endsWith(';') ? `${literal}/` : literal;
}

/** Runs a command to completion and collects its output. Never rejects (see `tmux`). */
export function runCommand(bin: string, args: readonly string[], opts: CommandOptions = {}): Promise<TmuxResult> {
  return new Promise((resolve) => {
    const child = spawn(bin, args, {
      env: opts.env,
      cwd: opts.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: Math.max(1, opts.timeoutMs ?? 10_000),
      signal: opts.signal,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err) => {
      // An abort reports AbortError and still closes the child: only a spawn failure ends here.
      if (err.name !== 'AbortError') resolve({ code: null, stdout, stderr: stderr + err.message });
    });
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
