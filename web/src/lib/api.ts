import { type ErrorCode, errorResponseSchema } from '@handoff/shared';
import { z } from 'zod';

/** A failed REST call or socket request, carrying the server's error code and message. */
export class ApiError extends Error {
  readonly code: ErrorCode | 'NETWORK';
  readonly status: number;
  /** The envelope's `details`, e.g. `{approvalId}` for APPROVAL_REQUIRED. */
  readonly details: unknown;
  constructor(code: ErrorCode | 'NETWORK', message: string, status = 0, details?: unknown) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.status = status;
    this.details = details;
  }
}

const approvalDetailsSchema = z.object({ approvalId: z.string() });

/** The pending approval's id when `error` is APPROVAL_REQUIRED (the command waits for a decision), else null. */
export function pendingApprovalId(error: unknown): string | null {
  if (!(error instanceof ApiError) || error.code !== 'APPROVAL_REQUIRED') return null;
  const details = approvalDetailsSchema.safeParse(error.details);
  return details.success ? details.data.approvalId : null;
}

const retryDetailsSchema = z.object({ retryAfterMs: z.number().int().min(0) });

/** How long a RATE_LIMITED `error` asks the caller to wait, in ms, or null for any other error. */
export function retryAfterMs(error: unknown): number | null {
  if (!(error instanceof ApiError) || error.code !== 'RATE_LIMITED') return null;
  const details = retryDetailsSchema.safeParse(error.details);
  return details.success ? details.data.retryAfterMs : null;
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
  const envelope = errorResponseSchema.safeParse(body);
  // APPROVAL_REQUIRED answers 202 with an error envelope: the command has not happened (yet).
  if (!response.ok || (response.status === 202 && envelope.success)) {
    if (envelope.success) {
      const { code, message, details } = envelope.data.error;
      throw new ApiError(code, message, response.status, details);
    }
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

/** `/task-runs/<id><rest>`, the id escaped. */
export function runPath(runId: string, rest = ''): string {
  return `/task-runs/${encodeURIComponent(runId)}${rest}`;
}
