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

// A rejection nobody handled is a bug to fix, not a reason to drop every socket and run
// stream of this node: say it loudly and keep serving. (Redis and database failures are
// handled where they happen and never end up here.)
process.on('unhandledRejection', (reason) => {
  log.error({ err: reason }, 'unhandled promise rejection (a bug: the failure was not handled where it happened); the hub keeps running');
});

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
  process.on(signal, () => {
    if (closing) return;
    closing = true;
    const started = Date.now();
    log.info({ signal, timeoutMs: config.SHUTDOWN_TIMEOUT }, 'shutting down');
    // The bound holds even if a step hangs (e.g. a flush against a database that went away).
    setTimeout(() => {
      log.error({ afterMs: Date.now() - started }, 'shutdown did not finish in time; exiting anyway');
      process.exit(1);
    }, config.SHUTDOWN_TIMEOUT).unref();
    hub.close({ noticeMs: config.SHUTDOWN_NOTICE }).then(
      () => {
        log.info({ tookMs: Date.now() - started }, 'shut down');
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  });
}
