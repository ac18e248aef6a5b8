import type { Socket } from 'socket.io';
import type { AuthService, Principal } from '../services/auth.js';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { AppError, assertSafeText, ErrorCode, validationError, type Ack } from '@handoff/shared';

type Table = Record<string, { payload: z.ZodType; response: z.ZodType }>;
type Handler<T extends Table, K extends keyof T> = (payload: z.output<T[K]['payload']>) => Promise<z.input<T[K]['response']>>;

/**
 * Registers a client→server event: the payload is parsed by its schema, the handler
 * sees typed data, and the client always gets the ack envelope. A bad payload or a
 * failing handler never throws out of here, never changes state, never drops the socket.
 */
export function on<T extends Table, K extends keyof T & string>(
  socket: Socket,
  table: T,
  event: K,
  log: Logger,
  handler: Handler<T, K>,
  /** Rate limit: returns 0 to proceed, else the ms until the client may retry. */
  limit?: () => number,
): void {
  const listener = (async (...args: unknown[]) => {
    const last = args[args.length - 1];
    const ack = typeof last === 'function' ? (last as (r: Ack<unknown>) => void) : () => {};
    const payload = args.length > 1 || typeof last !== 'function' ? args[0] : undefined;
    try {
      const retryAfterMs = limit?.() ?? 0;
      if (retryAfterMs) throw new AppError({ code: ErrorCode.RATE_LIMITED, message: `too many events; retry in ${retryAfterMs} ms`, details: { retryAfterMs } });
      assertSafeText(payload, `${event} payload`);
      const parsed = table[event]!.payload.safeParse(payload ?? {});
      if (!parsed.success) throw validationError(parsed.error, `${event} payload`);
      const data = await handler(parsed.data as z.output<T[K]['payload']>);
      ack({ ok: true, data });
    } catch (err) {
      const appErr = err instanceof AppError ? err : new AppError({ code: ErrorCode.INTERNAL, message: 'internal error', cause: err });
      if (appErr.code === ErrorCode.INTERNAL) log.error({ err, event }, 'socket handler failed');
      ack({ ok: false, error: appErr.toBody() });
    }
  }) as (...args: unknown[]) => void;
  socket.on(event as string, listener);
}

/** Handshake auth failures carry the error code for the client (`err.data.code`). */
export function handshakeError(code: ErrorCode, message: string): Error & { data: { code: ErrorCode } } {
  return Object.assign(new Error(message), { data: { code } });
}

/** The handshake's token: `auth.token` (a non-string counts as none). */
export function tokenOf(socket: Socket): string | undefined {
  const token: unknown = socket.handshake.auth?.token;
  return typeof token === 'string' ? token : undefined;
}

/**
 * Namespace middleware: authenticates the handshake token and admits only principals of
 * `kind` (users on /dashboard, workers on /worker), storing it in `socket.data.principal`.
 */
export function authenticateHandshake(auth: AuthService, kind: Principal['kind'], log: Logger) {
  return async (socket: Socket, next: (err?: Error) => void) => {
    try {
      const principal = await auth.authenticate(tokenOf(socket));
      if (!principal) return next(handshakeError(ErrorCode.UNAUTHENTICATED, `a valid ${kind} token is required`));
      if (principal.kind !== kind) return next(handshakeError(ErrorCode.FORBIDDEN, `${principal.kind} tokens cannot join ${socket.nsp.name}`));
      socket.data.principal = principal;
      next();
    } catch (err) {
      log.error({ err }, 'handshake failed');
      next(handshakeError(ErrorCode.INTERNAL, 'internal error'));
    }
  };
}
