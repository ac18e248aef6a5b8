/** A zod (v4) schema, read through its internals (`_zod.def`, `_zod.bag`) to find a field's limits. */
type Schema = unknown;
interface ZodInternals {
  _zod: { def: Record<string, any> };
}

/**
 * Hostile-payload generation for the fuzz tests. Values keep the field's JSON type (a
 * string field gets hostile *strings*, a number field hostile numbers…), so they reach the
 * validation of the field itself, not just a type check; some are legal (an RTL override
 * in a title is text) and the tests say so by accepting a 2xx.
 */

/** Hostile strings for a field whose schema allows at most `max` characters (when known). */
export function hostileStrings(max: number | undefined): Array<[string, string]> {
  const out: Array<[string, string]> = [
    ['NUL', 'a\u0000b'],
    ['lone high surrogate', 'a\ud800b'],
    ['lone low surrogate', '\udc00'],
    ['RTL override', 'abc\u202etxt.exe'],
    ['zero-width', 'a\u200b\u200c\u200d\ufeffb'],
    ['C0 controls', 'a\u0007\u0008\u001b[31mred\r\nforged'],
    ['C1 control', 'a\u0085\u009bb'],
    ['empty', ''],
    ['very long', 'x'.repeat(100_000)],
    ['emoji', '💥'.repeat(50)],
    ['SQL', "'; drop table runs; --"],
    ['path', '../../../etc/passwd'],
  ];
  if (max !== undefined && max < 100_000) out.push(['max length + 1', 'x'.repeat(max + 1)], ['max length + 1 (astral)', '💥'.repeat(max + 1)]);
  return out;
}

/** Hostile numbers, and the number-ish strings a lax coercion would accept. */
export const HOSTILE_NUMBERS: Array<[string, unknown]> = [
  ['2^53', 2 ** 53], ['-2^53', -(2 ** 53)], ['2^53 + 2', 2 ** 53 + 2], ['negative', -1], ['fractional', 0.5], ['1e308', 1e308], ['-0', -0],
  ['"NaN"', 'NaN'], ['"Infinity"', 'Infinity'], ['"1e400"', '1e400'], ['"0x10"', '0x10'],
];

/** An object nested `n` levels deep. */
export function deep(n: number): unknown {
  let v: unknown = 'bottom';
  for (let i = 0; i < n; i++) v = { a: v };
  return v;
}

/** `o` plus an own enumerable key (even `__proto__`, which a literal would make the prototype). */
function withKey(o: Record<string, unknown>, key: string, value: unknown): Record<string, unknown> {
  const copy = { ...o };
  Object.defineProperty(copy, key, { value, enumerable: true, writable: true, configurable: true });
  return copy;
}

/** Hostile objects built on a valid object `o` (a JSON object field or the payload itself). */
export function hostileObjects(o: Record<string, unknown>): Array<[string, unknown]> {
  return [
    ['__proto__ key', withKey(o, '__proto__', { polluted: true })],
    ['constructor key', withKey(o, 'constructor', { prototype: { polluted: true } })],
    ['unknown key', withKey(o, 'zzUnknown', 1)],
    ['deep nesting', withKey(o, 'nested', deep(40))],
    ['not an object: array', [o]],
    ['not an object: string', 'text'],
    ['null', null],
  ];
}

/** The schema of the value at `path` in `schema` (unwrapping optional/default/pipe…), when it can be told. */
export function schemaAt(schema: Schema | undefined, path: Array<string | number>): Schema | undefined {
  let s = unwrap(schema);
  for (const key of path) {
    if (!s) return undefined;
    const def = (s as ZodInternals)._zod.def;
    if (def.type === 'object') s = unwrap(def.shape[key]);
    else if (def.type === 'record') s = unwrap(def.valueType);
    else if (def.type === 'array') s = unwrap(def.element);
    else if (def.type === 'union') s = def.options.map((o: Schema) => schemaAt(o, [key])).find(Boolean);
    else return undefined;
  }
  return s;
}

function unwrap(s: Schema | undefined): Schema | undefined {
  let cur = s as ZodInternals | undefined;
  for (let i = 0; cur && i < 10; i++) {
    const def = cur._zod.def;
    if (['optional', 'default', 'nullable', 'prefault', 'readonly', 'catch', 'nonoptional'].includes(def.type)) cur = def.innerType;
    else if (def.type === 'pipe') cur = def.in;
    else break;
  }
  return cur;
}

/** The declared maximum length (string) or item count (array) of a schema, if any. */
export function maxOf(schema: Schema | undefined): number | undefined {
  const checks = ((schema as ZodInternals | undefined)?._zod.def.checks ?? []) as Array<{ _zod: { def: { check: string; maximum?: unknown } } }>;
  const max = checks.find((c) => c._zod.def.check === 'max_length')?._zod.def.maximum;
  return typeof max === 'number' && Number.isFinite(max) ? max : undefined;
}

export interface Mutant {
  /** Which field and which hostile value, for messages and counts. */
  what: string;
  payload: unknown;
}

function setAt(root: unknown, path: Array<string | number>, value: unknown): unknown {
  if (path.length === 0) return value;
  const [head, ...rest] = path;
  if (Array.isArray(root)) return root.map((v, i) => (i === head ? setAt(v, rest, value) : v));
  return withKey(root as Record<string, unknown>, String(head), setAt((root as Record<string, unknown>)[head!], rest, value));
}

/** Every leaf and container path of a JSON value. */
function paths(v: unknown, at: Array<string | number> = []): Array<Array<string | number>> {
  const out: Array<Array<string | number>> = [at];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...at, i])));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...at, k]));
  return out;
}

/**
 * Same-type hostile variants of a valid payload `base`: every field (and the payload
 * itself) gets the hostile values of its own JSON type; `schema` supplies max lengths.
 */
export function mutants(base: unknown, schema?: Schema): Mutant[] {
  const out: Mutant[] = [];
  for (const path of paths(base)) {
    const name = path.length ? path.join('.') : '(payload)';
    const value = path.reduce<unknown>((v, k) => (v as Record<string | number, unknown>)[k], base);
    const fieldSchema = schemaAt(schema, path);
    const push = (label: string, v: unknown) => out.push({ what: `${name}: ${label}`, payload: setAt(base, path, v) });
    if (typeof value === 'string') for (const [label, v] of hostileStrings(maxOf(fieldSchema))) push(label, v);
    else if (typeof value === 'number') for (const [label, v] of HOSTILE_NUMBERS) push(label, v);
    else if (typeof value === 'boolean') for (const [label, v] of [['"true"', 'true'], ['1', 1]] as const) push(label, v);
    else if (Array.isArray(value)) {
      const max = maxOf(fieldSchema) ?? 1000;
      push(`too many items (${max + 1})`, Array.from({ length: max + 1 }, () => value[0] ?? 'x'));
      push('not an array', { 0: value[0] });
    } else if (value && typeof value === 'object') for (const [label, v] of hostileObjects(value as Record<string, unknown>)) push(label, v);
  }
  return out;
}
