import { existsSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from './logger.js';
import { operatorShellProcesses } from './operator-shell.js';
import { reapProcesses, reapRun } from './process-tree.js';
import { RunFiles } from './run-script.js';
import { tmux } from './tmux.js';

const RUN_DIR_NAME = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Removes what a crashed predecessor left in the runs directory: for each run directory,
 * its processes (the agent's and an operator shell's), its tmux server, then the directory. Only run-id-named directories are
 * touched, so a misconfigured WORKER_RUN_DIR (say, /tmp) loses nothing else.
 * Returns how many run directories were removed.
 */
export async function cleanStaleRuns(runsDir: string, tmuxBin: string, log: Logger): Promise<number> {
  const entries = await readdir(runsDir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  let removed = 0;
  for (const entry of entries) {
    if (!entry.isDirectory() || !RUN_DIR_NAME.test(entry.name)) continue;
    const dir = join(runsDir, entry.name);
    const socket = join(dir, RunFiles.socket);
    if (existsSync(socket)) {
      // Every window's pane: during a takeover the operator's shell has one besides the agent's.
      const panes = await tmux(tmuxBin, socket, ['list-panes', '-s', '-t', 'run', '-F', '#{pane_pid}']);
      const pids = panes.code === 0 ? panes.stdout.split('\n').map((l) => Number.parseInt(l, 10)).filter((pid) => pid > 1) : [];
      await Promise.all(pids.map((pid) => reapRun(pid, 1000)));
      await tmux(tmuxBin, socket, ['kill-server']);
    }
    // What an operator started and detached (nohup, setsid) outlives the panes: it carries the shell's marker.
    await reapProcesses(() => operatorShellProcesses(dir), 1000);
    await rm(dir, { recursive: true, force: true });
    removed += 1;
    log.warn({ runId: entry.name }, 'removed a stale run left by a previous worker');
  }
  return removed;
}
