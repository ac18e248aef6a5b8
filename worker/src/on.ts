import type { z } from 'zod';
import { AppError, assertSafeText, ErrorCode, validationError, workerServerEvents, type Ack } from '@handoff/shared';
import type { Logger } from './logger.js';

type Inbound = typeof workerServerEvents;
/** An event the hub pushes to a worker (declared once in `shared/`: `workerServerEvents`). */
export type InboundEvent = keyof Inbound & string;
/** Its payload as the handler sees it: parsed by its schema. */
export type InboundPayload<E extends InboundEvent> = z.output<Inbound[E]['payload']>;
/** What the handler answers: the ack's `data` for an event the hub awaits, else nothing. */
export type InboundReply<E extends InboundEvent> = Inbound[E] extends { ack: z.ZodType } ? z.input<Inbound[E]['ack']> : void;
export type InboundHandler<E extends InboundEvent> = (payload: InboundPayload<E>) => InboundReply<E> | Promise<InboundReply<E>>;

/** The one method of a socket.io client socket that `on()` needs. */
export interface InboundSocket {
  on(event: string, listener: (...args: unknown[]) => void): unknown;
}

/**
 * Largest inbound payload, in characters of its strings and keys: twice the largest
 * legitimate one (an assignment of 256 argv entries of 4 KiB plus 100 env values of 8 KiB).
 * A bigger one is refused before its schema is even tried.
 */
export const MAX_INBOUND_CHARS = 4 * 1024 * 1024;

/**
 * Registers a hub→worker event: the payload is parsed once by its `shared/` schema and
 * the handler sees typed data. What the handler returns is the ok ack; what it throws
 * becomes the error ack (an `AppError` keeps its code, anything else is INTERNAL and
 * logged with its cause). An event the hub does not await gets its refusal logged
 * instead. A bad payload never reaches the handler, never throws out of here and never
 * drops the connection.
 */
export function on<E extends InboundEvent>(socket: InboundSocket, event: E, log: Logger, handler: InboundHandler<E>): void {
  const schema: z.ZodType = workerServerEvents[event].payload;
  socket.on(event, (...args: unknown[]) => {
    const last = args[args.length - 1];
    const ack = typeof last === 'function' ? (last as (r: Ack<unknown>) => void) : null;
    const payload = ack && args.length === 1 ? undefined : args[0];
    void answer(event, log, ack, async () => {
      if (exceeds(payload, MAX_INBOUND_CHARS)) {
        throw new AppError({ code: ErrorCode.VALIDATION, message: `invalid ${event} payload: larger than ${MAX_INBOUND_CHARS} characters` });
      }
      assertSafeText(payload, `${event} payload`);
      const parsed = schema.safeParse(payload);
      if (!parsed.success) throw validationError(parsed.error, `${event} payload`);
      return handler(parsed.data as InboundPayload<E>);
    });
  });
}

async function answer(event: string, log: Logger, ack: ((r: Ack<unknown>) => void) | null, run: () => Promise<unknown>): Promise<void> {
  let reply: Ack<unknown>;
  try {
    const data = await run();
    reply = { ok: true, data: data ?? {} };
  } catch (err) {
    const known = err instanceof AppError;
    const error = known ? err.toBody() : { code: ErrorCode.INTERNAL, message: `the worker failed to handle ${event}` };
    // The payload itself is never logged: it may carry keystrokes, messages or a run's env.
    if (!known) log.error({ err, event }, 'inbound event handler failed');
    else if (err.code === ErrorCode.VALIDATION) log.warn({ event, error: { code: error.code, message: error.message } }, 'refused a malformed event from the hub');
    else log.debug({ event, code: error.code }, 'inbound event refused');
    reply = { ok: false, error };
  }
  ack?.(reply);
}

/** Whether the strings and keys in `value` add up to more than `budget` characters (stops counting once they do). */
function exceeds(value: unknown, budget: number): boolean {
  let left = budget;
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'string') left -= v.length;
    else if (Array.isArray(v)) {
      left -= v.length; // an element costs at least a character on the wire
      if (left < 0) return true;
      for (const child of v) stack.push(child);
    } else if (v && typeof v === 'object') {
      for (const key in v) {
        left -= key.length + 1;
        if (left < 0) return true;
        stack.push((v as Record<string, unknown>)[key]);
      }
    }
    if (left < 0) return true; // the string just counted
  }
  return false;
}
