/**
 * What a run inherits from the worker's environment: only these, plus the names in
 * WORKER_PASS_ENV. Never the rest — under `pnpm start` the worker's environment is the
 * hub's (DATABASE_URL, REDIS_URL, HANDOFF_DATA_DIR with the secret key…), and a run must
 * not reach past the policy and the audit log.
 */
export const BASE_ENV_ALLOWLIST: readonly string[] = ['PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'LANG', 'LANGUAGE', 'TERM', 'TZ', 'TMPDIR'];

/** The worker's own variables, which no run may get even when WORKER_PASS_ENV names them. */
const NEVER_PASSED = new Set(['HANDOFF_WORKER_TOKEN', 'HANDOFF_URL']);

/** `WORKER_PASS_ENV`: comma-separated variable names (or `PREFIX_*`) the runs may inherit too. */
export function parsePassEnv(value: string | undefined): string[] {
  return (value ?? '').split(',').map((n) => n.trim()).filter(Boolean);
}

function passes(name: string, pass: readonly string[]): boolean {
  if (NEVER_PASSED.has(name)) return false;
  if (BASE_ENV_ALLOWLIST.includes(name) || name.startsWith('LC_')) return true;
  return pass.some((p) => (p.endsWith('*') ? name.startsWith(p.slice(0, -1)) : p === name));
}

/** A run's environment: the allowlisted part of the worker's, overlaid with the run's own `env`. */
export function runEnvironment(base: Record<string, string | undefined>, runEnv: Record<string, string>, pass: readonly string[] = []): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(base)) {
    if (value !== undefined && passes(name, pass)) Object.defineProperty(env, name, { value, enumerable: true, writable: true, configurable: true });
  }
  for (const [name, value] of Object.entries(runEnv)) Object.defineProperty(env, name, { value, enumerable: true, writable: true, configurable: true });
  return env;
}
