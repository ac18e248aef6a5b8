import type { Request } from 'express';
import type { z } from 'zod';
import { assertSafeText, validationError } from '@handoff/shared';

/** Parses one part of a request with its schema; a failure (or text that cannot be stored: NUL, lone surrogates) is a VALIDATION AppError. */
export function parse<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  assertSafeText(value, what);
  const result = schema.safeParse(value ?? {});
  if (!result.success) throw validationError(result.error, what);
  return result.data;
}

export const parseBody = <S extends z.ZodType>(schema: S, req: Request) => parse(schema, req.body, 'body');
export const parseQuery = <S extends z.ZodType>(schema: S, req: Request) => parse(schema, { ...req.query }, 'query');
export const parseParams = <S extends z.ZodType>(schema: S, req: Request) => parse(schema, { ...req.params }, 'path');
