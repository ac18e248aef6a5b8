import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig, workerConfigSchema, type WorkerConfig } from '@handoff/shared';

/** The worker's parsed configuration; `WORKER_RUN_DIR` is always resolved. */
export type ResolvedWorkerConfig = Readonly<WorkerConfig & { WORKER_RUN_DIR: string }>;

/**
 * Parses the worker's environment once (throws a readable error listing every bad
 * variable). The only place in the worker that reads the environment.
 */
export function loadConfig(env: Record<string, string | undefined> = process.env): ResolvedWorkerConfig {
  const parsed = parseConfig(workerConfigSchema, env);
  const runDir = parsed.WORKER_RUN_DIR ?? join(tmpdir(), `handoff-worker-${process.getuid?.() ?? 'user'}`);
  return Object.freeze({ ...parsed, WORKER_RUN_DIR: runDir });
}
