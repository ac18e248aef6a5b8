import type { ErrorRequestHandler } from 'express';
import type { Logger } from 'pino';
import { AppError, ErrorCode, httpStatusOf } from '@handoff/shared';

/** Maps anything thrown to a known error: AppError as is, everything else INTERNAL. */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  return new AppError({ code: ErrorCode.INTERNAL, message: 'internal error', cause: err });
}

/** The one REST error boundary: `{error: {code, message, details?}}` with the code's status. */
export function errorBoundary(log: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    let appErr: AppError;
    // body-parser failures carry a `type` and a status; they are the client's fault.
    const bodyErr = err as { type?: string; status?: number };
    if (bodyErr.type === 'entity.parse.failed') appErr = new AppError({ code: ErrorCode.VALIDATION, message: 'request body is not valid JSON' });
    else if (bodyErr.type === 'entity.too.large') appErr = new AppError({ code: ErrorCode.VALIDATION, message: 'request body too large' });
    else if (bodyErr.type === 'encoding.invalid' || bodyErr.type === 'entity.verify.failed') appErr = new AppError({ code: ErrorCode.VALIDATION, message: 'request body is not valid UTF-8' });
    else appErr = toAppError(err);
    if (appErr.code === ErrorCode.INTERNAL) log.error({ err: appErr.cause ?? err, method: req.method, path: req.path }, 'request failed');
    res.status(httpStatusOf[appErr.code]).json({ error: appErr.toBody() });
  };
}
