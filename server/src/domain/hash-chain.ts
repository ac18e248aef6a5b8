import { createHash } from 'node:crypto';

/** The fields of an audit row that its hash covers. */
export interface ChainedFields {
  id: string;
  runId: string | null;
  seq: number;
  sessionId: string | null;
  correlationId: string;
  actorType: string;
  actorId: string;
  action: string;
  result: string;
  at: string;
  metadata: unknown;
}

/**
 * Deterministic JSON: object keys sorted at every depth, so equal rows hash equally. For JSON
 * values (what rows and heads hold: strings, finite numbers, booleans, null, arrays, objects)
 * this is exactly RFC 8785 (JCS): JSON.stringify's string escaping and ECMAScript number
 * form, keys sorted by UTF-16 code units (JS `<`). Existing chains therefore already hash
 * JCS bytes, and a verifier in any language can use an off-the-shelf JCS library.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/** sha-256 over the previous hash and the row's canonical encoding (hex). */
export function chainHash(prevHash: string | null, row: ChainedFields): string {
  return createHash('sha256')
    .update(prevHash ?? '')
    .update('\n')
    .update(canonicalJson(row))
    .digest('hex');
}

/**
 * The canonical JSON of a row whose seq is not known yet, cut where the seq goes:
 * `prefix + String(seq) + suffix === canonicalJson(row)`. Keys sort `…runId < seq < sessionId`,
 * so the seq is the last member but one, after every key the caller controls (metadata is
 * one member before it): the cut can be made without searching the text.
 */
export function chainHashParts(row: Omit<ChainedFields, 'seq'>): { prefix: string; suffix: string } {
  const { sessionId, ...rest } = row;
  const head = canonicalJson(rest);
  return { prefix: `${head.slice(0, -1)},"seq":`, suffix: `,"sessionId":${JSON.stringify(sessionId)}}` };
}
