import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from './logger.js';
import { findProviderBinary, isSessionDirName, removeShare, sharesDirOf } from './share-provider.js';
import { TmateFiles } from './tmate-provider.js';
import { tmux } from './tmux.js';

/**
 * Removes what a crashed predecessor left in `<runsDir>/shares/`: for each share
 * directory, its tmate server (asked to quit, so it tells its relay), every process
 * carrying the share's marker (upterm, orphaned pane clients), then the directory.
 * Only session-id-named directories are touched. Returns how many were removed.
 */
export async function cleanStaleShares(
  runsDir: string,
  binaries: { tmateBin: string | undefined; pathVar: string | undefined },
  log: Logger,
): Promise<number> {
  const sharesDir = sharesDirOf(runsDir);
  const entries = await readdir(sharesDir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  let tmateBin: string | null | undefined;
  let removed = 0;
  for (const entry of entries) {
    if (!entry.isDirectory() || !isSessionDirName(entry.name)) continue;
    const dir = join(sharesDir, entry.name);
    const socket = join(dir, TmateFiles.socket);
    if (existsSync(socket)) {
      tmateBin ??= findProviderBinary('tmate', binaries.tmateBin, binaries.pathVar);
      // Without tmate here, its server still goes: it carries the share's marker too.
      if (tmateBin) await tmux(tmateBin, socket, ['kill-server'], { timeoutMs: 5000 });
    }
    await removeShare(dir, 1000);
    removed += 1;
    log.warn({ sessionId: entry.name }, 'removed a stale share left by a previous worker');
  }
  return removed;
}

