import { parseConfig, workerConfigSchema, type WorkerConfig } from '@handoff/shared';
import { defaultRunDir } from './run-dir.js';

/** The worker's parsed configuration; `WORKER_RUN_DIR` is always resolved, `HANDOFF_URL` split into `hubUrls`. */
export type ResolvedWorkerConfig = Readonly<WorkerConfig & { WORKER_RUN_DIR: string; hubUrls: readonly string[] }>;

/**
 * Parses the worker's environment once (throws a readable error listing every bad
 * variable). The only place in the worker that reads the environment.
 */
export function loadConfig(env: Record<string, string | undefined> = process.env): ResolvedWorkerConfig {
  const parsed = parseConfig(workerConfigSchema, env);
  // Per worker identity by default: two workers of one user never share a run dir.
  const runDir = parsed.WORKER_RUN_DIR ?? defaultRunDir(parsed.HANDOFF_WORKER_TOKEN);
  const hubUrls = Object.freeze(parsed.HANDOFF_URL.split(',').map((u) => u.trim().replace(/\/+$/, '')).filter(Boolean));
  return Object.freeze({ ...parsed, WORKER_RUN_DIR: runDir, hubUrls });
}
