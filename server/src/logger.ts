import { pino, type Logger } from 'pino';

/** The one pino logger of the hub process; modules take a child (`logger.child({module})`). */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { svc: 'hub' },
    // Tokens arrive in these headers/fields; they must never reach a log line.
    redact: { paths: ['req.headers.authorization', 'token', '*.token', 'auth.token'], censor: '[REDACTED]' },
  });
}
export type { Logger };
