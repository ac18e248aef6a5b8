import { type ErrorCode, errorResponseSchema } from '@handoff/shared';
import type { z } from 'zod';

/** A failed REST call or socket request, carrying the server's error code and message. */
export class ApiError extends Error {
  readonly code: ErrorCode | 'NETWORK';
  readonly status: number;
  constructor(code: ErrorCode | 'NETWORK', message: string, status = 0) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.status = status;
  }
}

export interface ApiRequest<S extends z.ZodType> {
  token: string;
  /** Schema of the success body; the answer is parsed with it. */
  schema: S;
  method?: 'GET' | 'POST';
  body?: unknown;
}

/** Calls `/api<path>` with the bearer token; resolves to the parsed body or throws ApiError. */
export async function api<S extends z.ZodType>(path: string, req: ApiRequest<S>): Promise<z.output<S>> {
  const headers: Record<string, string> = { Authorization: `Bearer ${req.token}`, Accept: 'application/json' };
  if (req.body !== undefined) headers['Content-Type'] = 'application/json';
  let response: Response;
  try {
    response = await fetch(`/api${path}`, {
      method: req.method ?? 'GET',
      headers,
      body: req.body === undefined ? undefined : JSON.stringify(req.body),
    });
  } catch (cause) {
    throw new ApiError('NETWORK', `cannot reach the hub (${errorMessage(cause)})`);
  }
  const body: unknown = await response.json().catch(() => undefined);
  if (!response.ok) {
    const parsed = errorResponseSchema.safeParse(body);
    if (parsed.success) throw new ApiError(parsed.data.error.code, parsed.data.error.message, response.status);
    throw new ApiError('INTERNAL', `the hub answered ${response.status} ${response.statusText}`.trim(), response.status);
  }
  const parsed = req.schema.safeParse(body);
  if (!parsed.success) throw new ApiError('INTERNAL', `unexpected answer from ${path}`, response.status);
  return parsed.data;
}

/** A readable message for anything thrown. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
