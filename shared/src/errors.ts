import { z } from 'zod';

/** Every error code the API and the sockets can answer with (DESIGN.md §3). */
export const ErrorCode = {
  VALIDATION: 'VALIDATION',
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  FORBIDDEN: 'FORBIDDEN',
  POLICY_DENIED: 'POLICY_DENIED',
  APPROVAL_REQUIRED: 'APPROVAL_REQUIRED',
  NOT_FOUND: 'NOT_FOUND',
  STATE_CONFLICT: 'STATE_CONFLICT',
  LIMIT_REACHED: 'LIMIT_REACHED',
  EXPIRED: 'EXPIRED',
  RATE_LIMITED: 'RATE_LIMITED',
  UNAVAILABLE: 'UNAVAILABLE',
  INTERNAL: 'INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];
export const errorCodeSchema = z.enum(Object.values(ErrorCode) as [ErrorCode, ...ErrorCode[]]);

/** HTTP status for each code; the REST boundary uses it, nothing else decides statuses. */
export const httpStatusOf: Record<ErrorCode, number> = {
  VALIDATION: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  POLICY_DENIED: 403,
  APPROVAL_REQUIRED: 202,
  NOT_FOUND: 404,
  STATE_CONFLICT: 409,
  LIMIT_REACHED: 409,
  EXPIRED: 410,
  RATE_LIMITED: 429,
  UNAVAILABLE: 503,
  INTERNAL: 500,
};

export const errorBodySchema = z.object({
  code: errorCodeSchema,
  message: z.string(),
  details: z.unknown().optional(),
});
export type ErrorBody = z.infer<typeof errorBodySchema>;

/** REST error envelope: `{error: {code, message, details?}}`. */
export const errorResponseSchema = z.object({ error: errorBodySchema });

/** Socket ack envelope: `{ok: true, data} | {ok: false, error}`. */
export type Ack<T> = { ok: true; data: T } | { ok: false; error: ErrorBody };
export type AckCallback<T> = (response: Ack<T>) => void;

/** A typed, expected failure. Services throw it; edges turn it into the envelope. */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly details: unknown;
  constructor(opts: { code: ErrorCode; message: string; details?: unknown; cause?: unknown }) {
    super(opts.message, { cause: opts.cause });
    this.name = 'AppError';
    this.code = opts.code;
    this.details = opts.details;
  }
  toBody(): ErrorBody {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

/** Turns a zod failure into a readable one-line message plus structured issues. */
export function validationError(error: z.ZodError, what = 'input'): AppError {
  const issues = error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message }));
  const first = issues[0];
  const where = first && first.path ? ` at "${first.path}"` : '';
  return new AppError({
    code: ErrorCode.VALIDATION,
    message: `invalid ${what}${where}: ${first?.message ?? 'malformed'}`,
    details: { issues: issues.slice(0, 20) },
  });
}
