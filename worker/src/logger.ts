import { pino, type Logger } from 'pino';
import { redactText } from '@handoff/shared';

export type { Logger };

/** The worker's one root logger; modules take `logger.child({ module })` from it. */
export function createLogger(level: string): Logger {
  return pino({
    name: 'handoff-worker',
    level,
    // Belt and braces: nothing should log a token or a share's RW attach data, but if an
    // object carrying one slips in, it is masked.
    redact: {
      paths: ['token', '*.token', 'auth', '*.auth', 'HANDOFF_WORKER_TOKEN', '*.HANDOFF_WORKER_TOKEN', 'attachRw', '*.attachRw'],
      censor: '[REDACTED]',
    },
    // Then every line passes the one redaction module (keys, tokens, passwords in URLs, …).
    hooks: { streamWrite: redactText },
  });
}
