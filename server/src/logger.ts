import { pino, type DestinationStream, type Logger } from 'pino';
import { redactText } from '@handoff/shared';

/** The one pino logger of the hub process; modules take a child (`logger.child({module})`). */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { svc: 'hub' },
    // Tokens arrive in these headers/fields; they must never reach a log line.
    redact: { paths: ['req.headers.authorization', 'token', '*.token', 'auth.token'], censor: '[REDACTED]' },
    // Whatever else slips into a line (an error message quoting a URL with a password, a
    // key in a stack) is caught by the one redaction module before the line is written.
    hooks: { streamWrite: redactText },
  };
  return destination ? pino(options, destination) : pino(options);
}
export type { Logger };
