// `pnpm start`: the whole system on one machine — hub (embedded PGlite unless
// DATABASE_URL is set), dashboard, one local worker, and a demo agent run.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(fileURLToPath(new URL('..', import.meta.url)));
const port = process.env.PORT ?? '3000';
const hubUrl = `http://127.0.0.1:${port}`;
const tsx = path.join(root, 'node_modules/.bin/tsx');
// Quiet logs by default so the banner below stays readable; LOG_LEVEL=info for more.
const env = { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn', PORT: port, HANDOFF_DATA_DIR: process.env.HANDOFF_DATA_DIR ?? path.join(root, '.data') };
const children = [];

function step(text) {
  process.stdout.write(`\x1b[1m▸ ${text}\x1b[0m\n`);
}

function stopAll(code) {
  for (const child of children) if (child.exitCode === null) child.kill('SIGTERM');
  setTimeout(() => process.exit(code), 1500).unref();
}

if (!existsSync(path.join(root, 'web/dist/index.html')) || process.env.HANDOFF_REBUILD === '1') {
  step('building the dashboard');
  const build = spawnSync(path.join(root, 'node_modules/.bin/vite'), ['build', '--logLevel', 'warn'], { cwd: root, stdio: 'inherit', env });
  if (build.status !== 0) process.exit(build.status ?? 1);
}

step('preparing the database, the local worker token and a demo run');
const boot = spawnSync(tsx, [path.join(root, 'server/src/cli.ts'), 'bootstrap-local'], { cwd: root, env, encoding: 'utf8' });
if (boot.status !== 0) {
  process.stderr.write(boot.stderr);
  process.exit(boot.status ?? 1);
}
const { adminToken, workerToken, demoRunId } = JSON.parse(boot.stdout.trim().split('\n').pop());

step(`starting the hub on ${hubUrl}`);
const hub = spawn(tsx, [path.join(root, 'server/src/main.ts')], { cwd: root, env, stdio: 'inherit' });
children.push(hub);
hub.on('exit', (code) => {
  process.stderr.write(`hub exited (${code})\n`);
  stopAll(code ?? 1);
});

const deadline = Date.now() + 60_000;
for (;;) {
  const ok = await fetch(`${hubUrl}/healthz`).then((r) => r.ok, () => false);
  if (ok) break;
  if (Date.now() > deadline) {
    process.stderr.write('hub did not become healthy within 60 s\n');
    stopAll(1);
  }
  await new Promise((r) => setTimeout(r, 250));
}

step('starting a local worker');
const worker = spawn(tsx, [path.join(root, 'worker/src/main.ts')], {
  cwd: root,
  env: { ...env, HANDOFF_URL: hubUrl, HANDOFF_WORKER_TOKEN: workerToken },
  stdio: 'inherit',
});
children.push(worker);
worker.on('exit', (code) => process.stderr.write(`worker exited (${code})\n`));

const login = adminToken
  ? `  Admin token (shown once — keep it):\n    ${adminToken}\n\n  Dashboard: ${hubUrl}/#token=${adminToken}`
  : `  Dashboard: ${hubUrl}\n  (log in with your admin token; lost it? stop this and run: pnpm handoff user add --name me --role admin)`;
process.stdout.write(`\n\x1b[1mHandoff is running.\x1b[0m\n\n${login}\n\n  Demo run: ${hubUrl}/#/runs/${demoRunId}\n\n  Ctrl-C stops everything.\n\n`);

for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => stopAll(0));
