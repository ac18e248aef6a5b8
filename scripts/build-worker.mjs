// Part of `pnpm build`: dist/handoff-worker.mjs, the worker and the `handoff-agent` CLI
// (MCP server included) in one file with every dependency bundled, for machines without
// the monorepo: Node ≥ 20 and tmux are all it needs (see docs/deploy.md, docs/handoff-worker.service).
// `--out <file>` writes elsewhere (the tests build into a temp dir).
import { chmodSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';

const root = path.resolve(fileURLToPath(new URL('..', import.meta.url)));
const { values } = parseArgs({ options: { out: { type: 'string' } } });
const outfile = path.resolve(values.out ?? path.join(root, 'dist/handoff-worker.mjs'));
mkdirSync(path.dirname(outfile), { recursive: true });

await build({
  entryPoints: [path.join(root, 'worker/src/standalone.ts')],
  outfile,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  // The bundle is its own agent CLI (run-script.ts AGENT_CLI_ARGV).
  define: { __HANDOFF_SINGLE_FILE__: 'true' },
  // ws's optional native speed-ups: required inside try/catch, absent is fine.
  external: ['bufferutil', 'utf-8-validate'],
  logLevel: 'warning',
  legalComments: 'none',
  // CommonJS dependencies call require(): give the ESM bundle one.
  banner: { js: "#!/usr/bin/env node\nimport { createRequire as __handoffRequire } from 'node:module'; const require = __handoffRequire(import.meta.url);" },
});
chmodSync(outfile, 0o755);
process.stdout.write(`build: ${path.relative(process.cwd(), outfile)} ready\n`);
