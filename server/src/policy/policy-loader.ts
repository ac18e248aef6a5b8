import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMap, isNode, isScalar, LineCounter, parseDocument, type Document } from 'yaml';
import type { z } from 'zod';
import { policyFileSchema, type Policy } from '../domain/policy.js';

// Reads the policy file (HANDOFF_POLICY, YAML or JSON) and validates it. A bad policy must
// stop the hub with a message an operator can act on: file, line and column of the fault.

/** The policy shipped with Handoff, used when HANDOFF_POLICY is unset. */
export const DEFAULT_POLICY_PATH = fileURLToPath(new URL('../../policy.default.yaml', import.meta.url));

export type PolicyFormat = 'yaml' | 'json';

/** Loads and validates a policy file (format by extension: .yaml/.yml/.json); no path → the default. */
export function loadPolicy(path: string = DEFAULT_POLICY_PATH): Policy {
  const ext = extname(path).toLowerCase();
  const format: PolicyFormat | null = ext === '.json' ? 'json' : ext === '.yaml' || ext === '.yml' ? 'yaml' : null;
  if (!format) throw new Error(`policy file ${path}: unsupported extension "${ext}" (use .yaml, .yml or .json)`);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`policy file ${path} could not be read: ${(err as Error).message}`, { cause: err });
  }
  return parsePolicy(text, format, path);
}

/** Parses and validates policy text; `file` only names the source in error messages. */
export function parsePolicy(text: string, format: PolicyFormat, file = '<policy>'): Policy {
  const lines = new LineCounter();
  // YAML 1.2 is a superset of JSON, so the YAML parser also gives node positions for JSON
  // documents; JSON.parse stays the judge of JSON syntax and values.
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number) => {
    const { line, col } = lines.linePos(offset);
    return `${file}:${line}:${col}`;
  };

  let data: unknown;
  if (format === 'json') {
    try {
      data = JSON.parse(text);
    } catch (err) {
      const message = (err as Error).message;
      const offset = Number(/position (\d+)/.exec(message)?.[1] ?? text.length);
      throw new Error(`invalid policy ${at(offset)}: JSON syntax error: ${message.replace(/\s*\(line \d+ column \d+\)/, '')}`, { cause: err });
    }
  } else {
    const [syntax] = doc.errors;
    if (syntax) throw new Error(`invalid policy ${at(syntax.pos[0])}: YAML syntax error: ${syntax.message}`, { cause: syntax });
    data = doc.toJS({ maxAliasCount: 100 });
  }

  const result = policyFileSchema.safeParse(data);
  if (result.success) return result.data;
  const issues = result.error.issues
    .slice(0, 10)
    .map((issue) => `${at(issueOffset(doc, issue))}: ${formatPath(issue.path)}: ${issue.message}`);
  throw new Error(`invalid policy ${issues.join('\n  ')}`, { cause: result.error });
}

/** `rules[2].effect` — the way the file's author would find it. */
function formatPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '(document)';
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i ? '.' : ''}${String(p)}`)).join('');
}

/** Start offset of the node an issue is about: the deepest existing node on its path. */
function issueOffset(doc: Document, issue: z.core.$ZodIssue): number {
  const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
  for (let n = path.length; n >= 0; n--) {
    const node: unknown = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    if (!isNode(node) || !node.range) continue;
    // An unknown key is reported on its map; point at the key itself.
    if (n === path.length && issue.code === 'unrecognized_keys' && isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && p.key.value === issue.keys[0]);
      if (pair && isNode(pair.key) && pair.key.range) return pair.key.range[0];
    }
    return node.range[0];
  }
  return 0;
}
