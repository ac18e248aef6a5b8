import { loadConfig } from './config.js';
import { createHub } from './hub.js';
import { createLogger } from './logger.js';

let config;
try {
  config = loadConfig();
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exit(2);
}
const log = createLogger(config.LOG_LEVEL);
let hub;
try {
  hub = await createHub(config, { logger: log });
} catch (err) {
  // A bad policy file, key or database URL: say what is wrong, without a stack trace.
  process.stderr.write(`handoff hub could not start: ${(err as Error).message}\n`);
  process.exit(2);
}

const adminToken = await hub.auth.bootstrapAdmin();
if (adminToken) {
  // Printed once, on the first start with an empty database; only its hash is stored.
  process.stdout.write(
    `\n  First start: an admin was created. Its token (shown only this once):\n\n    ${adminToken}\n\n` +
      `  Open the dashboard: ${hub.url}/#token=${adminToken}\n\n`,
  );
}

let closing = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, async () => {
    if (closing) return;
    closing = true;
    log.info({ signal }, 'shutting down');
    await hub.close().catch((err) => log.error({ err }, 'shutdown failed'));
    process.exit(0);
  });
}
