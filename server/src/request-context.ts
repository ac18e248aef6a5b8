import { AsyncLocalStorage } from 'node:async_hooks';

/** What a REST request gathers while it runs, for its access log line. */
export interface RequestContext {
  /** Correlation ids of the audit rows the request appended (a command has one; a takeover's steps share it). */
  correlationIds: Set<string>;
}

/** Carried through the request's async work, so the audit log can report back without a parameter on every call. */
export const requestContext = new AsyncLocalStorage<RequestContext>();
