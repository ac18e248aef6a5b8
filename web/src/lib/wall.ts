import type { RunStatus } from '@handoff/shared';

/** What the wall shows: runs whose terminal is live. */
export const WALL_STATUSES: RunStatus[] = ['running'];

declare global {
  interface Window {
    /** Test hook: the text of the wall tile of a run (empty when it has none). */
    __handoffWallText?: (runId: string) => string;
  }
}

const tiles = new Map<string, () => string>();

/** Makes a wall tile's terminal text readable by end-to-end tests; returns a function removing it. */
export function registerWallTile(runId: string, read: () => string): () => void {
  tiles.set(runId, read);
  window.__handoffWallText = (id) => tiles.get(id)?.() ?? '';
  return () => {
    if (tiles.get(runId) === read) tiles.delete(runId);
  };
}
