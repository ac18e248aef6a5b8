import type { AuditEvent } from './rest.js';

// What an observer sees of the audit log. Every row's metadata is already redacted of
// secrets before it is persisted (redaction.ts); these fields hold what an operator saw or
// wrote for the agent — the hand-back's summary, environment snapshot and shell history, and
// the parameters of a command waiting for approval — which the run page never shows an
// observer either: the timeline must not become a side door to them.

/** Metadata members hidden from observers, at any depth. */
export const OBSERVER_HIDDEN_METADATA: ReadonlySet<string> = new Set(['env', 'commands', 'params', 'summary']);

/** What replaces a hidden value: tells the reader a value exists and why it is not shown. */
export const OBSERVER_REDACTED = '[REDACTED:observer]';

function hide(value: unknown, depth: number): unknown {
  if (value === null || typeof value !== 'object' || depth > 8) return value;
  if (Array.isArray(value)) return value.map((v) => hide(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    Object.defineProperty(out, k, { value: OBSERVER_HIDDEN_METADATA.has(k) ? OBSERVER_REDACTED : hide(v, depth + 1), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/**
 * The row as an observer reads it: hidden metadata members replaced by `[REDACTED:observer]`.
 * `hash` and `prevHash` stay, so the chain's links still show; the hash of a row whose
 * metadata changed no longer recomputes (the hub's `…/events/verify` checks the full rows).
 */
export function observerAuditView(event: AuditEvent): AuditEvent {
  return { ...event, metadata: hide(event.metadata, 0) as Record<string, unknown> };
}
