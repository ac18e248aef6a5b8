import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { AppError, createWebhookBodySchema, parseDuration, roleSchema, webhookEventSchema } from '@handoff/shared';
import { createLogger } from './logger.js';
import { loadSecretKey, SecretBox } from './services/secret-box.js';
import { WebhookService } from './services/webhooks.js';
import { loadConfig } from './config.js';
import { openDatabase } from './db/orm.js';
import { AuthService } from './services/auth.js';
import type { Notifier } from './services/notifier.js';
import { RunService } from './services/runs.js';

const USAGE = `usage:
  pnpm handoff user add --name <name> --role observer|operator|admin [--ttl 30d]   create a user, print its token once
  pnpm handoff user token --name <name> [--label <label>] [--ttl 90d]            another token for a user
  pnpm handoff token list --name <name>                                list a user's tokens (never the secrets)
  pnpm handoff token revoke --id <token id>                            revoke a token (its sockets go within a second)
  pnpm handoff worker-token --name <worker> [--rotate]                 a worker token (registers the worker)
  pnpm handoff webhook add --url <url> --events run.finished,takeover.started [--description <text>] [--format json|slack]
                                                                       register an outbound webhook, print its signing secret once
  pnpm handoff webhook list                                            endpoints and their subscribed events
  pnpm handoff webhook remove --id <endpoint id>                       remove an endpoint (its pending deliveries are dropped)
  pnpm handoff bootstrap-local                                         used by 'pnpm start' (JSON output)

With the embedded database (no DATABASE_URL), stop the hub first: PGlite allows one process.`;

/** The CLI runs without a hub: pushes have nowhere to go until the hub starts. */
const offline: Notifier = {
  runUpdated() {}, sessionUpdated() {}, termFrames() {}, cancelOnWorker() {}, kickSchedulers() {},
  sessionGrace() {}, closeTerm() {}, termViewerCount: async () => 0, disconnectToken() {}, startShare() {}, stopShare() {}, approvalUpdated() {},
  controlApply() {}, deliverMessage() {}, messageCreated() {}, messageUpdated() {}, needsOperator() {}, grantUpdated() {},
  termInput: () => Promise.reject(new Error('the CLI cannot type into a terminal')),
};

const DEMO_AGENT = fileURLToPath(new URL('../../worker/src/demo-agent.mjs', import.meta.url));

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { url: { type: 'string' }, events: { type: 'string' }, description: { type: 'string' }, format: { type: 'string' }, name: { type: 'string' }, role: { type: 'string' }, label: { type: 'string' }, ttl: { type: 'string' }, id: { type: 'string' }, rotate: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
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
    const ttlMs = values.ttl === undefined ? undefined : (parseDuration(values.ttl) ?? undefined);
    if (values.ttl !== undefined && !ttlMs) throw new AppError({ code: 'VALIDATION', message: `--ttl "${values.ttl}" is not a duration (e.g. 12h, 30d)` });
    if (cmd === 'user' && sub === 'add') {
      const role = roleSchema.safeParse(values.role);
      if (!values.name || !role.success) throw new AppError({ code: 'VALIDATION', message: '--name and --role observer|operator|admin are required' });
      const { token } = await auth.addUser(values.name, role.data, { ttlMs });
      process.stdout.write(`user ${values.name} (${role.data}) created. Token (shown once):\n${token}\n`);
    } else if (cmd === 'user' && sub === 'token') {
      if (!values.name) throw new AppError({ code: 'VALIDATION', message: '--name is required' });
      const token = await auth.addUserToken(values.name, values.label ?? 'cli', { ttlMs });
      process.stdout.write(`new token for ${values.name} (shown once):\n${token}\n`);
    } else if (cmd === 'token' && sub === 'list') {
      if (!values.name) throw new AppError({ code: 'VALIDATION', message: '--name is required' });
      for (const t of await auth.listTokensOf(values.name)) {
        const state = t.revokedAt ? `revoked ${t.revokedAt}` : t.expiresAt ? `expires ${t.expiresAt}` : 'no expiry';
        process.stdout.write(`${t.id}  ${t.label}  created ${t.createdAt}  last used ${t.lastUsedAt ?? 'never'}  ${state}\n`);
      }
    } else if (cmd === 'token' && sub === 'revoke') {
      if (!values.id) throw new AppError({ code: 'VALIDATION', message: '--id is required' });
      const t = await auth.revokeToken({ type: 'system', id: 'cli' }, values.id);
      process.stdout.write(`token ${t.id} (${t.label}) revoked; the running hub cuts off its open sockets at its next sweep (within a second)\n`);
    } else if (cmd === 'worker-token') {
      if (!values.name) throw new AppError({ code: 'VALIDATION', message: '--name is required' });
      const { token } = await auth.issueWorkerToken(values.name, { rotate: !!values.rotate });
      process.stdout.write(`worker token for ${values.name} (shown once):\n${token}\n`);
    } else if (cmd === 'webhook') {
      // Enqueued events are delivered by the running hub; the CLI only manages endpoints.
      const webhooks = new WebhookService(orm, new SecretBox(loadSecretKey({ configured: config.HANDOFF_SECRET_KEY, dataDir: config.HANDOFF_DATA_DIR })), createLogger('warn'), {
        retryBaseMs: config.WEBHOOK_RETRY_BASE, maxAgeMs: config.WEBHOOK_MAX_AGE, pollIntervalMs: config.WEBHOOK_POLL_INTERVAL, timeoutMs: config.WEBHOOK_TIMEOUT, publicUrl: config.HANDOFF_PUBLIC_URL ?? null,
      });
      if (sub === 'add') {
        const body = createWebhookBodySchema.safeParse({ url: values.url, events: values.events?.split(',').map((e) => e.trim()).filter(Boolean), description: values.description, format: values.format });
        if (!body.success) throw new AppError({ code: 'VALIDATION', message: `--url <http(s) url> and --events <${webhookEventSchema.options.join('|')},…> are required (--format json|slack)` });
        const { endpoint, secret } = await webhooks.create('cli', body.data);
        process.stdout.write(`webhook ${endpoint.id} → ${endpoint.url} (${endpoint.events.join(', ')}, ${endpoint.format}). Signing secret (shown once):\n${secret}\n`);
      } else if (sub === 'list') {
        for (const e of await webhooks.list()) process.stdout.write(`${e.id}  ${e.url}  ${e.format}  ${e.events.join(',')}  ${e.description ?? ''}\n`);
      } else if (sub === 'remove') {
        if (!values.id) throw new AppError({ code: 'VALIDATION', message: '--id is required' });
        const e = await webhooks.remove(values.id);
        process.stdout.write(`webhook ${e.id} (${e.url}) removed\n`);
      } else {
        throw new AppError({ code: 'VALIDATION', message: `unknown webhook command ${sub ?? ''}\n${USAGE}` });
      }
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
