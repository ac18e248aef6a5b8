// `pnpm build:server`: compiles the hub (main, cli, migrate) and the worker to JavaScript
// in dist/, for the production image. npm dependencies stay external (installed with
// `pnpm install --prod`); the workspace's own TypeScript (@handoff/shared, migrations/) is
// bundled in. The layout mirrors the source tree, so paths resolved from import.meta.url
// (web/dist, policy.default.yaml, the agent SDK) find their copies under dist/.
// `pnpm start` and the tests keep running from source through tsx.
import { cpSync, existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(fileURLToPath(new URL('..', import.meta.url)));
const out = path.join(root, 'dist');
const deps = (pkg) => Object.keys(JSON.parse(readFileSync(path.join(root, pkg, 'package.json'), 'utf8')).dependencies ?? {});
const external = [...new Set([...deps('server'), ...deps('worker'), ...deps('shared')])].filter((d) => !d.startsWith('@handoff/'));

rmSync(out, { recursive: true, force: true });
const common = {
  bundle: true,
  platform: 'node',
  target: 'node22',
  format: 'esm',
  sourcemap: true,
  external,
  logLevel: 'warning',
  // Some CommonJS dependencies call require(); give ESM bundles one.
  banner: { js: "import { createRequire as __handoffRequire } from 'node:module'; const require = __handoffRequire(import.meta.url);" },
};
await build({
  ...common,
  entryPoints: ['server/src/main.ts', 'server/src/cli.ts', 'server/src/migrate.ts'].map((p) => path.join(root, p)),
  outdir: path.join(out, 'server/src'),
  splitting: true,
  // Chunks beside the entries: import.meta.url-relative paths must resolve from the same depth.
  chunkNames: '[name]-[hash]',
});
await build({ ...common, entryPoints: [path.join(root, 'worker/src/main.ts')], outdir: path.join(out, 'worker/src') });

cpSync(path.join(root, 'server/policy.default.yaml'), path.join(out, 'policy.default.yaml'));
cpSync(path.join(root, 'worker/agent-sdk'), path.join(out, 'worker/agent-sdk'), { recursive: true });
cpSync(path.join(root, 'worker/src/demo-agent.mjs'), path.join(out, 'worker/src/demo-agent.mjs'));
if (existsSync(path.join(root, 'web/dist/index.html'))) cpSync(path.join(root, 'web/dist'), path.join(out, 'web/dist'), { recursive: true });
else process.stderr.write('build: web/dist is missing (run `pnpm build` first); the hub will serve the API only\n');
process.stdout.write(`build: dist/ ready (external: ${external.length} packages)\n`);
