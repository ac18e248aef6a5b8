import { existsSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from './logger.js';
import { reapRun } from './process-tree.js';
import { RunFiles } from './run-script.js';
import { tmux } from './tmux.js';

const RUN_DIR_NAME = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Removes what a crashed predecessor left in the runs directory: for each run directory,
 * its processes, its tmux server, then the directory. Only run-id-named directories are
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
      const pane = await tmux(tmuxBin, socket, ['display-message', '-p', '-t', 'run', '#{pane_pid}']);
      const panePid = Number.parseInt(pane.stdout.trim(), 10);
      if (pane.code === 0 && panePid > 1) await reapRun(panePid, 1000);
      await tmux(tmuxBin, socket, ['kill-server']);
    }
    await rm(dir, { recursive: true, force: true });
    removed += 1;
    log.warn({ runId: entry.name }, 'removed a stale run left by a previous worker');
  }
  return removed;
}
