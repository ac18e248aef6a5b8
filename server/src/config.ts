import { parseConfig, serverConfigSchema, type ServerConfig } from '@handoff/shared';

/** The hub's configuration: parsed once from the environment (DESIGN.md §5). */
export function loadConfig(env: Record<string, string | undefined> = process.env): ServerConfig {
  return parseConfig(serverConfigSchema, env);
}
export type { ServerConfig };
