import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { existsSync, readFileSync } from 'node:fs';
import { z } from 'zod';
import { AppError, auditHeadSchema, createWebhookBodySchema, ErrorCode, parseDuration, roleSchema, systemClock, tokenLabelSchema, userNameSchema, webhookEventSchema, workerNameSchema } from '@handoff/shared';
import { grantHubRole } from './infra/db/hub-role.js';
import { parsePublicKey, verifyExport } from './domain/audit-head.js';
import { createLogger } from './logger.js';
import { loadSecretKey, SecretBox } from './infra/secret-box.js';
import { WebhookService } from './webhooks/webhook-service.js';
import { loadConfig } from './config.js';
import { openDatabase } from './infra/db/orm.js';
import { AuthService } from './auth/auth-service.js';
import type { Notifier } from './hooks/notifier.js';
import { RunService } from './runs/run-service.js';
import { HubEvents } from './hooks/hub-events.js';
import { PolicyEvaluator, PolicyGate } from './policy/policy-gate.js';
import { loadPolicy } from './policy/policy-loader.js';

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
  pnpm handoff db grant-hub-role --role <name>                         as the owner (MIGRATION_DATABASE_URL): migrate, then grant
                                                                       the hub's role what it needs (audit tables: insert/select only)
  pnpm handoff audit verify <export.jsonl> --key <file|base64> [--head <file>]...
                                                                       verify an audit export offline against signed heads
                                                                       (exit 0 ok, 1 broken or cut); needs no database

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
    options: { url: { type: 'string' }, events: { type: 'string' }, description: { type: 'string' }, format: { type: 'string' }, key: { type: 'string' }, head: { type: 'string', multiple: true }, name: { type: 'string' }, role: { type: 'string' }, label: { type: 'string' }, ttl: { type: 'string' }, id: { type: 'string' }, rotate: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  const [cmd, sub] = positionals;
  if (values.help || !cmd) {
    process.stdout.write(`${USAGE}\n`);
    return cmd ? 0 : 2;
  }
  // Offline: an auditor runs this anywhere, with no hub, database or configuration.
  if (cmd === 'audit' && sub === 'verify') return auditVerify(positionals[2], values.key, values.head ?? []);
  // Checked before the database opens, with the schemas the API uses: a bad argument is a
  // usage error (exit 2) naming the option, never a raw database error.
  const name = values.name === undefined ? undefined : checked(cmd === 'worker-token' ? workerNameSchema : userNameSchema, values.name, '--name');
  const label = values.label === undefined ? undefined : checked(tokenLabelSchema, values.label, '--label');
  const ttlMs = values.ttl === undefined ? undefined : (parseDuration(values.ttl) ?? undefined);
  if (values.ttl !== undefined && !ttlMs) throw new AppError({ code: ErrorCode.VALIDATION, message: `--ttl "${values.ttl}" is not a duration (e.g. 12h, 30d)` });
  if (values.id !== undefined) checked(z.uuid(), values.id, '--id');
  const config = loadConfig();
  if (cmd === 'db' && sub === 'grant-hub-role') {
    if (!config.MIGRATION_DATABASE_URL) throw new AppError({ code: 'VALIDATION', message: 'MIGRATION_DATABASE_URL (the owner role) must be set: grants are given by the owner' });
    if (!values.role) throw new AppError({ code: 'VALIDATION', message: '--role is required' });
    const owner = await openDatabase({ databaseUrl: config.MIGRATION_DATABASE_URL, dataDir: config.HANDOFF_DATA_DIR });
    try {
      for (const sql of await grantHubRole(owner, values.role)) process.stdout.write(`${sql};\n`);
      process.stdout.write(`role ${values.role} can now run the hub (DATABASE_URL); it cannot alter, truncate or rewrite the audit tables\n`);
      return 0;
    } finally {
      await owner.close();
    }
  }
  // With an owner URL configured, DATABASE_URL is the hub's role: it checks, never migrates.
  const orm = await openDatabase({ databaseUrl: config.DATABASE_URL, dataDir: config.HANDOFF_DATA_DIR, migrate: !(config.DATABASE_URL && config.MIGRATION_DATABASE_URL) });
  try {
    const auth = new AuthService(orm, systemClock);
    if (cmd === 'user' && sub === 'add') {
      const role = roleSchema.safeParse(values.role);
      if (!name || !role.success) throw new AppError({ code: ErrorCode.VALIDATION, message: '--name and --role observer|operator|admin are required' });
      const { token } = await auth.addUser(name, role.data, { ttlMs });
      process.stdout.write(`user ${name} (${role.data}) created. Token (shown once):\n${token}\n`);
    } else if (cmd === 'user' && sub === 'token') {
      if (!name) throw new AppError({ code: ErrorCode.VALIDATION, message: '--name is required' });
      const token = await auth.addUserToken(name, label ?? 'cli', { ttlMs });
      process.stdout.write(`new token for ${name} (shown once):\n${token}\n`);
    } else if (cmd === 'token' && sub === 'list') {
      if (!name) throw new AppError({ code: ErrorCode.VALIDATION, message: '--name is required' });
      for (const t of await auth.listTokensOf(name)) {
        const state = t.revokedAt ? `revoked ${t.revokedAt}` : t.expiresAt ? `expires ${t.expiresAt}` : 'no expiry';
        process.stdout.write(`${t.id}  ${t.label}  created ${t.createdAt}  last used ${t.lastUsedAt ?? 'never'}  ${state}\n`);
      }
    } else if (cmd === 'token' && sub === 'revoke') {
      if (!values.id) throw new AppError({ code: ErrorCode.VALIDATION, message: '--id is required' });
      const t = await auth.revokeToken({ type: 'system', id: 'cli' }, values.id);
      process.stdout.write(`token ${t.id} (${t.label}) revoked; the running hub cuts off its open sockets at its next sweep (within a second)\n`);
    } else if (cmd === 'worker-token') {
      if (!name) throw new AppError({ code: ErrorCode.VALIDATION, message: '--name is required' });
      const { token } = await auth.issueWorkerToken(name, { rotate: !!values.rotate });
      process.stdout.write(`worker token for ${name} (shown once):\n${token}\n`);
    } else if (cmd === 'webhook') {
      // Enqueued events are delivered by the running hub; the CLI only manages endpoints.
      const webhooks = new WebhookService(orm, new SecretBox(loadSecretKey({ configured: config.HANDOFF_SECRET_KEY, dataDir: config.HANDOFF_DATA_DIR })), createLogger('warn'), systemClock, {
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
      // The demo run is the hub's own (no policy check); nothing reacts to its events offline.
      const gate = new PolicyGate(orm, new PolicyEvaluator(loadPolicy(config.HANDOFF_POLICY), systemClock), null, systemClock);
      const runs = new RunService(orm, offline, gate, new HubEvents(), systemClock, { liveSessionDefault: config.LIVE_SESSION_ENABLED_DEFAULT });
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

/** `value` parsed by `schema`, or a VALIDATION error naming the option and every problem. */
function checked<T>(schema: z.ZodType<T>, value: string, option: string): T {
  // argv cannot carry U+0000 or a lone surrogate, but Node decodes invalid UTF-8 in it as
  // U+FFFD: refuse it, as the REST edge refuses a body that is not UTF-8.
  if (value.includes('\ufffd')) throw new AppError({ code: ErrorCode.VALIDATION, message: `${option} is not valid UTF-8 text` });
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  throw new AppError({ code: ErrorCode.VALIDATION, message: `${option} ${r.error.issues.map((i) => i.message).join('; ')}` });
}

/** `audit verify`: prints the verdict; exit 0 when the export matches every signed head. */
function auditVerify(file: string | undefined, keyArg: string | undefined, headFiles: string[]): number {
  if (!file || !keyArg) throw new AppError({ code: 'VALIDATION', message: 'usage: pnpm handoff audit verify <export.jsonl> --key <public key file or base64> [--head <head.json>]' });
  const keyText = existsSync(keyArg) ? readFileSync(keyArg, 'utf8') : keyArg;
  const key = parsePublicKey(keyText);
  if (!key) throw new AppError({ code: 'VALIDATION', message: '--key is neither a 32-byte Ed25519 public key (base64 or hex) nor an SPKI PEM (GET /api/audit/public-key gives both)' });
  const heads = headFiles.map((f) => {
    const parsed = auditHeadSchema.safeParse(unwrapHead(JSON.parse(readFileSync(f, 'utf8'))));
    if (!parsed.success) throw new AppError({ code: 'VALIDATION', message: `${f} does not hold a signed head` });
    return parsed.data;
  });
  const verdict = verifyExport(readFileSync(file, 'utf8'), key, heads);
  if (verdict.ok) {
    process.stdout.write(`ok: ${verdict.rows} rows, chain intact up to the head signed ${verdict.head.signedAt} (run ${verdict.head.runId}, seq ${verdict.head.seq})\n`);
    return 0;
  }
  process.stderr.write(`FAILED: ${verdict.reason}\n`);
  return 1;
}

/** A head file may be the head itself, a `{"head": …}` export line, or a whole `…/events` page. */
function unwrapHead(v: unknown): unknown {
  return v && typeof v === 'object' && 'head' in v ? (v as { head: unknown }).head : v;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
    // A usage error (bad argument) is 2, like parseArgs' own; anything else 1.
    const usage = (err instanceof AppError && err.code === ErrorCode.VALIDATION) || (err as { code?: string })?.code?.startsWith('ERR_PARSE_ARGS');
    process.exit(usage ? 2 : 1);
  },
);
