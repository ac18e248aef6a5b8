import { AppError, ErrorCode } from './errors.js';

/** Deeper than this, a payload is refused as a whole (no wire message of ours nests that far). */
export const MAX_DEPTH = 32;

/** Why a string cannot be stored or shown safely, or null when it can. */
export function textProblem(s: string): string | null {
  // Both checks are native: terminal output passes here a megabyte at a time.
  // PostgreSQL text cannot hold U+0000; a client never means it.
  if (s.includes('\u0000')) return 'contains U+0000 (NUL)';
  if (!(s as unknown as WellFormed).isWellFormed()) return 'contains a lone surrogate (invalid Unicode)';
  return null;
}

/** ES2024's `String#isWellFormed` (Node 20+, every current browser); the project's lib is ES2023. */
interface WellFormed {
  isWellFormed(): boolean;
}

/**
 * The first string (value or object key) in `value` that cannot be stored or shown safely,
 * with its path — or null. Every edge runs it on what a client sent, before the schema.
 */
export function findUnsafeText(value: unknown, path: string[] = [], depth = 0): { path: string; problem: string } | null {
  if (depth > MAX_DEPTH) return { path: path.join('.'), problem: `is nested deeper than ${MAX_DEPTH} levels` };
  if (typeof value === 'string') {
    const problem = textProblem(value);
    return problem ? { path: path.join('.'), problem } : null;
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = findUnsafeText(value[i], [...path, String(i)], depth + 1);
      if (found) return found;
    }
    return null;
  }
  if (value && typeof value === 'object') {
    for (const [key, v] of Object.entries(value)) {
      const keyProblem = textProblem(key);
      if (keyProblem) return { path: [...path, key.replace(/[\u0000\ud800-\udfff]/g, '?')].join('.'), problem: `has a key that ${keyProblem}` };
      const found = findUnsafeText(v, [...path, key], depth + 1);
      if (found) return found;
    }
  }
  return null;
}

/** Throws VALIDATION naming the field when `value` holds text that cannot be stored safely. */
export function assertSafeText(value: unknown, what: string): void {
  const found = findUnsafeText(value);
  if (!found) return;
  const where = found.path ? ` at "${found.path}"` : '';
  throw new AppError({ code: ErrorCode.VALIDATION, message: `invalid ${what}${where}: ${found.problem}`, details: { issues: [{ path: found.path, message: found.problem }] } });
}
