import type { ErrorRequestHandler } from 'express';
import type { Logger } from 'pino';
import { AppError, ErrorCode, httpStatusOf } from '@handoff/shared';
import { toAppError, UNAVAILABLE_RETRY_AFTER_MS } from '../errors.js';

/**
 * The one REST error boundary: `{error: {code, message, details?}}` with the code's status.
 * A database outage (anywhere: the auth lookup, a service, a transaction), or a transaction
 * the database rolled back for a concurrent one (deadlock, serialization failure), is
 * `503 UNAVAILABLE` with `Retry-After`, so clients retry instead of reporting a bug.
 */
export function errorBoundary(log: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    let appErr: AppError;
    // body-parser failures carry a `type` and a status; they are the client's fault.
    const bodyErr = err as { type?: string; status?: number };
    if (bodyErr.type === 'entity.parse.failed') appErr = new AppError({ code: ErrorCode.VALIDATION, message: 'request body is not valid JSON' });
    else if (bodyErr.type === 'entity.too.large') appErr = new AppError({ code: ErrorCode.VALIDATION, message: 'request body too large' });
    else if (bodyErr.type === 'encoding.invalid' || bodyErr.type === 'entity.verify.failed') appErr = new AppError({ code: ErrorCode.VALIDATION, message: 'request body is not valid UTF-8' });
    // The router could not percent-decode a path parameter (e.g. %FF, or a UTF-8-encoded
    // surrogate): the client's URL, not our bug.
    else if (err instanceof URIError) appErr = new AppError({ code: ErrorCode.VALIDATION, message: 'the URL holds a path segment that is not valid percent-encoded UTF-8' });
    else appErr = toAppError(err);
    if (appErr.code === ErrorCode.INTERNAL) log.error({ err: appErr.cause ?? err, method: req.method, path: req.path }, 'request failed');
    if (appErr.code === ErrorCode.UNAVAILABLE) {
      // Expected during an outage or a conflict: one line without a stack, not an error report per request.
      log.warn({ reason: (appErr.cause as Error | undefined)?.message, method: req.method, path: req.path }, `request refused: ${appErr.message}`);
      const retryAfterMs = (appErr.details as { retryAfterMs?: number } | undefined)?.retryAfterMs ?? UNAVAILABLE_RETRY_AFTER_MS;
      if (!res.hasHeader('retry-after')) res.setHeader('retry-after', String(Math.ceil(retryAfterMs / 1000)));
    }
    res.status(httpStatusOf[appErr.code]).json({ error: appErr.toBody() });
  };
}
