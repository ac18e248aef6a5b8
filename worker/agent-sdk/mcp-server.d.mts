// `handoff-agent mcp` (see README.md): the MCP server over stdio, and the server itself for embedding.
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';

/** Builds the server (not connected) for the run whose files `env` names (default `process.env`). */
export declare function createMcpServer(options?: { env?: Record<string, string | undefined>; version?: string }): Promise<McpServer>;
/** Serves on stdin/stdout until the client closes stdin, then exits the process. */
export declare function runMcpServer(options?: { env?: Record<string, string | undefined>; version?: string }): Promise<void>;
