import { readdir } from 'node:fs/promises';

const RUN_DIR_NAME = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The run ids of the run directories a previous worker process left in `runsDir` (the
 * worker's own: the run dir is per worker identity). Only run-id-named directories count,
 * so a misconfigured WORKER_RUN_DIR (say, /tmp) never has anything else touched. What
 * becomes of each is decided by the worker: removed when dead (`TmuxRun.inspect`,
 * `TmuxRun.remove`), otherwise re-adopted or stopped on the hub's verdict.
 */
export async function findRunDirs(runsDir: string): Promise<string[]> {
  const entries = await readdir(runsDir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  return entries.filter((e) => e.isDirectory() && RUN_DIR_NAME.test(e.name)).map((e) => e.name);
}
