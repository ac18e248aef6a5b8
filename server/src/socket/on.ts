import type { Socket } from 'socket.io';
import type { AuthService, Principal } from '../auth/auth-service.js';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { AppError, assertSafeText, ErrorCode, validationError, type Ack } from '@handoff/shared';
import { toAppError } from '../errors.js';
import { metrics } from '../metrics.js';
import type { RateLimits } from '../infra/rate-limits.js';
import { clientIp } from '../http/client-ip.js';

type Table = Record<string, { payload: z.ZodType; response: z.ZodType }>;
type Handler<T extends Table, K extends keyof T, S> = (state: S, payload: z.output<T[K]['payload']>) => Promise<z.input<T[K]['response']>>;
/** A namespace's handlers of its client→server events, each given the socket's state and the parsed payload. */
export type Handlers<T extends Table, S> = { [K in keyof T & string]?: Handler<T, K, S> };

export interface SocketEventOptions<S> {
  /** The socket's state, as its handlers see it (made at connection, kept on the socket). */
  state: (socket: Socket) => S;
  /** Rate limit: returns 0 to proceed, else the ms until the client may retry. */
  limit?: (socket: Socket) => number;
}

/**
 * Registers a namespace's client→server events. The payload is parsed by its schema, the
 * handler sees typed data, and the client always gets the ack envelope. A bad payload or a
 * failing handler never throws out of here, never changes state, never drops the socket.
 *
 * The listeners are made once, here, and shared by every socket of the namespace (the socket
 * is the emitter they are called on): attaching them to a socket allocates nothing of its
 * own — memory every idle worker would hold, times thousands of workers on a node.
 */
export function socketEvents<T extends Table, S>(table: T, log: Logger, handlers: Handlers<T, S>, opts: SocketEventOptions<S>): (socket: Socket) => void {
  const listeners = Object.entries(handlers).map(([event, handler]) => {
    const listener = function (this: Socket, ...args: unknown[]): void {
      void handle(this, table, event, log, handler as Handler<T, string, S>, opts, args);
    };
    return [event, listener] as const;
  });
  return (socket) => {
    for (const [event, listener] of listeners) socket.on(event, listener);
  };
}

async function handle<T extends Table, S>(socket: Socket, table: T, event: string, log: Logger, handler: Handler<T, string, S>, opts: SocketEventOptions<S>, args: unknown[]): Promise<void> {
  const last = args[args.length - 1];
  const ack = typeof last === 'function' ? (last as (r: Ack<unknown>) => void) : () => {};
  const payload = args.length > 1 || typeof last !== 'function' ? args[0] : undefined;
  try {
    const retryAfterMs = opts.limit?.(socket) ?? 0;
    if (retryAfterMs) metrics.rateLimited.inc({ edge: 'socket' });
    if (retryAfterMs) throw new AppError({ code: ErrorCode.RATE_LIMITED, message: `too many events; retry in ${retryAfterMs} ms`, details: { retryAfterMs } });
    assertSafeText(payload, `${event} payload`);
    const parsed = table[event]!.payload.safeParse(payload ?? {});
    if (!parsed.success) throw validationError(parsed.error, `${event} payload`);
    const started = performance.now();
    const data = await handler(opts.state(socket), parsed.data as z.output<T[string]['payload']>);
    if (log.isLevelEnabled('trace')) socketLog(socket, log).trace({ event, ms: Math.round(performance.now() - started) }, 'socket event');
    ack({ ok: true, data });
  } catch (err) {
    // A database outage or a transaction lost to a concurrent one acks UNAVAILABLE (the worker retries it); only the unknown is logged as a failure.
    const appErr = toAppError(err);
    if (appErr.code === ErrorCode.INTERNAL) socketLog(socket, log).error({ err, event }, 'socket handler failed');
    else if (appErr.code === ErrorCode.UNAVAILABLE) socketLog(socket, log).warn({ reason: (err as Error).message, event }, `socket event refused: ${appErr.message}`);
    else socketLog(socket, log).debug({ event, code: appErr.code }, 'socket event refused');
    ack({ ok: false, error: appErr.toBody() });
  }
}

/** One child logger per socket, made on first use: every line names the socket and who is on it (never the token). */
const socketLogs = new WeakMap<Socket, Logger>();
function socketLog(socket: Socket, log: Logger): Logger {
  let child = socketLogs.get(socket);
  if (!child) {
    const principal = socket.data.principal as Principal | undefined;
    child = log.child({ socketId: socket.id, nsp: socket.nsp.name, ...(principal ? { principalKind: principal.kind, principalId: principal.id } : {}) });
    socketLogs.set(socket, child);
  }
  return child;
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
/** The per-IP budgets a handshake is counted against, and how to find the client's IP. */
export interface HandshakeThrottle {
  limits: RateLimits;
  /** TRUST_PROXY_HOPS (see client-ip.ts). */
  trustedHops: number;
}

export function authenticateHandshake(auth: AuthService, kind: Principal['kind'], log: Logger, throttle: HandshakeThrottle) {
  return async (socket: Socket, next: (err?: Error) => void) => {
    const limited = (retryAfterMs: number, why: string) => {
      metrics.rateLimited.inc({ edge: 'socket' });
      return next(Object.assign(new Error(`${why}; retry in ${retryAfterMs} ms`), { data: { code: ErrorCode.RATE_LIMITED, retryAfterMs } }));
    };
    try {
      const { limits } = throttle;
      const ip = clientIp(socket.handshake.address, socket.handshake.headers['x-forwarded-for'], throttle.trustedHops);
      // Same budgets as REST, checked before the token lookup.
      const blocked = await limits.authBlocked(ip);
      if (blocked) return limited(blocked, 'too many failed authentications from your address');
      const wait = await limits.request(ip);
      if (wait) return limited(wait, 'too many requests from your address');
      const principal = await auth.authenticate(tokenOf(socket));
      if (!principal) {
        const nowBlocked = await limits.authFailed(ip);
        if (nowBlocked) return limited(nowBlocked, 'too many failed authentications from your address');
        return next(handshakeError(ErrorCode.UNAUTHENTICATED, `a valid ${kind} token is required`));
      }
      if (principal.kind !== kind) return next(handshakeError(ErrorCode.FORBIDDEN, `${principal.kind} tokens cannot join ${socket.nsp.name}`));
      socket.data.principal = principal;
      next();
    } catch (err) {
      const appErr = toAppError(err);
      if (appErr.code === ErrorCode.UNAVAILABLE) {
        // The client's reconnect retries it; a database outage is not an auth failure.
        log.warn({ reason: (err as Error).message }, 'handshake refused: database unavailable');
        return next(handshakeError(ErrorCode.UNAVAILABLE, appErr.message));
      }
      log.error({ err }, 'handshake failed');
      next(handshakeError(ErrorCode.INTERNAL, 'internal error'));
    }
  };
}
