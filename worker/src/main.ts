import { loadConfig } from './config.js';
import { createLogger } from './logger.js';
import { Worker } from './worker.js';

function configOrExit() {
  try {
    return loadConfig();
  } catch (err) {
    // A bad environment stops the start with a readable message, before any logger exists.
    process.stderr.write(`handoff worker: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
}

const config = configOrExit();
const logger = createLogger(config.LOG_LEVEL);
const worker = new Worker({ config, baseEnv: process.env, logger });

let signals = 0;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(1);
    }
    logger.info({ signal }, 'shutting down: cancelling active runs');
    worker.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  });
}

try {
  await worker.start();
} catch (err) {
  logger.fatal({ err }, 'worker could not start');
  process.exit(1);
}
