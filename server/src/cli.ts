import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { AppError, roleSchema } from '@handoff/shared';
import { loadConfig } from './config.js';
import { openDatabase } from './db/orm.js';
import { AuthService } from './services/auth.js';
import type { Notifier } from './services/notifier.js';
import { RunService } from './services/runs.js';

const USAGE = `usage:
  pnpm handoff user add --name <name> --role observer|operator|admin   create a user, print its token once
  pnpm handoff user token --name <name> [--label <label>]              another token for a user
  pnpm handoff worker-token --name <worker> [--rotate]                 a worker token (registers the worker)
  pnpm handoff bootstrap-local                                         used by 'pnpm start' (JSON output)

With the embedded database (no DATABASE_URL), stop the hub first: PGlite allows one process.`;

/** The CLI runs without a hub: pushes have nowhere to go until the hub starts. */
const offline: Notifier = {
  runUpdated() {}, sessionUpdated() {}, termFrames() {}, cancelOnWorker() {}, kickSchedulers() {},
  sessionGrace() {}, closeTerm() {}, termViewerCount: async () => 0, startShare() {}, stopShare() {}, approvalUpdated() {},
  controlApply() {}, deliverMessage() {}, messageCreated() {}, messageUpdated() {}, needsOperator() {}, grantUpdated() {},
  termInput: () => Promise.reject(new Error('the CLI cannot type into a terminal')),
};

const DEMO_AGENT = fileURLToPath(new URL('../../worker/src/demo-agent.mjs', import.meta.url));

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { name: { type: 'string' }, role: { type: 'string' }, label: { type: 'string' }, rotate: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  const [cmd, sub] = positionals;
  if (values.help || !cmd) {
    process.stdout.write(`${USAGE}\n`);
    return cmd ? 0 : 2;
  }
  const config = loadConfig();
  const orm = await openDatabase({ databaseUrl: config.DATABASE_URL, dataDir: config.HANDOFF_DATA_DIR });
  try {
    const auth = new AuthService(orm);
    if (cmd === 'user' && sub === 'add') {
      const role = roleSchema.safeParse(values.role);
      if (!values.name || !role.success) throw new AppError({ code: 'VALIDATION', message: '--name and --role observer|operator|admin are required' });
      const { token } = await auth.addUser(values.name, role.data);
      process.stdout.write(`user ${values.name} (${role.data}) created. Token (shown once):\n${token}\n`);
    } else if (cmd === 'user' && sub === 'token') {
      if (!values.name) throw new AppError({ code: 'VALIDATION', message: '--name is required' });
      const token = await auth.addUserToken(values.name, values.label ?? 'cli');
      process.stdout.write(`new token for ${values.name} (shown once):\n${token}\n`);
    } else if (cmd === 'worker-token') {
      if (!values.name) throw new AppError({ code: 'VALIDATION', message: '--name is required' });
      const { token } = await auth.issueWorkerToken(values.name, { rotate: !!values.rotate });
      process.stdout.write(`worker token for ${values.name} (shown once):\n${token}\n`);
    } else if (cmd === 'bootstrap-local') {
      const adminToken = await auth.bootstrapAdmin();
      const { token: workerToken } = await auth.issueWorkerToken('local', { rotate: true });
      const runs = new RunService(orm, offline, { liveSessionDefault: config.LIVE_SESSION_ENABLED_DEFAULT });
      const demo = await runs.create(
        { type: 'system', id: 'demo' },
        // ~24 steps of 1.5–3 s: long enough to open the dashboard and watch it live.
        { title: 'demo agent: refactor + tests', command: { argv: ['node', DEMO_AGENT] }, env: { DEMO_AGENT_STEPS: '24' }, labels: { demo: 'true' } },
      );
      process.stdout.write(`${JSON.stringify({ adminToken, workerToken, demoRunId: demo.id })}\n`);
    } else {
      process.stderr.write(`unknown command: ${positionals.join(' ')}\n${USAGE}\n`);
      return 2;
    }
    return 0;
  } finally {
    await orm.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
