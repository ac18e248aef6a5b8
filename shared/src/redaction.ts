// Secret redaction for everything that is persisted or exported (audit metadata, env
// snapshots, handoff packets). Over-redacting costs a little readability; under-redacting
// leaks a credential into an append-only log that can never be edited, so rules lean wide.

/** What a `[REDACTED:<kind>]` marker says was removed. */
export const RedactionKind = {
  aws: 'aws',
  gcp: 'gcp',
  github: 'github',
  gitlab: 'gitlab',
  openai: 'openai',
  slack: 'slack',
  bearer: 'bearer',
  urlPassword: 'url-password',
  connPassword: 'conn-password',
  pem: 'pem',
  jwt: 'jwt',
  attach: 'attach',
  handoffToken: 'handoff-token',
  env: 'env',
} as const;
export type RedactionKind = (typeof RedactionKind)[keyof typeof RedactionKind];

/** Objects nested deeper than this are replaced by `[Truncated]` (audit metadata is shallow). */
export const MAX_REDACT_DEPTH = 32;

const mark = (kind: RedactionKind) => `[REDACTED:${kind}]`;
const alreadyRedacted = (s: string) => s.startsWith('[REDACTED:');
// Random tokens mix letters and digits; words like "sk-learn-compatible-wrapper" do not.
const looksRandom = (s: string) => /[0-9]/.test(s) && /[A-Za-z]/.test(s);

const KEY_COMPOUNDS = new Set(['apikey', 'privatekey', 'secretkey', 'accesskey', 'signingkey', 'masterkey', 'encryptionkey', 'sshkey', 'licensekey']);
// "publicKey", "keyId", "authType", "sortKey" name things about or beside a secret, not one.
const KEY_QUALIFIERS = new Set([
  'public', 'id', 'ids', 'name', 'path', 'file', 'fingerprint', 'type', 'method', 'count',
  'sort', 'cache', 'primary', 'foreign', 'partition', 'idempotency',
]);

/** Splits `apiKey`, `API_KEY`, `x-api-key`, `HTTPAuthorization` into lower-case word parts. */
function wordParts(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1 $2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter(Boolean);
}

/**
 * True when an object key or env var name says its value is a secret: it contains TOKEN,
 * SECRET, PASSWORD, PASSWD or CREDENTIAL anywhere, or has KEY / AUTH as a word part
 * (`API_KEY`, `apiKey`, `authorization`; not `keyboard`, `monkey`, `author`, `publicKey`).
 */
export function isSecretName(name: string): boolean {
  const lower = name.toLowerCase();
  if (/token|secret|passw(or)?d|credential/.test(lower)) return true;
  const parts = wordParts(name);
  if (parts.some((p) => KEY_QUALIFIERS.has(p))) return false;
  return parts.some(
    (p) => p === 'key' || p === 'keys' || KEY_COMPOUNDS.has(p) || p === 'auth' || p === 'authn' || p === 'authz' || p === 'oauth' || p.startsWith('authoriz'),
  );
}

type Rule = { kind: RedactionKind; re: RegExp; replace: (match: string, ...groups: string[]) => string };

// `$1[REDACTED:kind]$3`-style rules keep the surrounding context so the text still reads.
const keep = (kind: RedactionKind) => (m: string, pre: string, secret: string, post = '') =>
  alreadyRedacted(secret) ? m : `${pre}${mark(kind)}${post}`;
const whole = (kind: RedactionKind, check: (s: string) => boolean = () => true) => (m: string) => (check(m) ? mark(kind) : m);
// tmate read-only tokens start with `ro-` (also `user/ro-name` for named sessions): RO data is not secret.
const isTmateRw = (token: string) => !/(^|\/)ro-/.test(token);
// `ssh [-p 2200 | -o X=y ...] ` prefix of an attach command.
const SSH = String.raw`(\bssh\s+(?:-[A-Za-z]\s*[^\s@]*\s+){0,6})`;

// Every open-ended repetition that can start at many positions is bounded, so a long
// hostile string (audit metadata is user input) costs linear time, not quadratic.
// Order matters: multi-line and structured forms first, so the more specific kind wins
// (a JWT after "Bearer" reads `Bearer [REDACTED:jwt]`); later rules skip existing markers.
const RULES: Rule[] = [
  { kind: 'gcp', re: /("private_key(?:_id)?"\s*:\s*")((?:[^"\\]|\\.)+)(")/g, replace: keep('gcp') },
  { kind: 'pem', re: /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)/g, replace: whole('pem') },
  { kind: 'jwt', re: /\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*/g, replace: whole('jwt') },
  {
    kind: 'url-password',
    re: /(\b[a-zA-Z][a-zA-Z0-9+.-]{0,31}:\/\/[^\s:/?#@]{0,256}:)([^\s@]{1,256})(@)/g,
    // `host:443/@alice` is a port and a path, not a password; a raw "/" inside a password is.
    replace: (m, pre, secret, post) => (/^\d+\//.test(secret) ? m : keep('url-password')(m, pre, secret, post)),
  },
  {
    kind: 'conn-password',
    re: /(\b(?:password|passwd|pwd)\s*=\s*)('[^']*'|"[^"]*"|[^;\s&'"]+)()/gi,
    // ODBC spells it `Pwd=`; the shell's `PWD=` is the working directory.
    replace: (m, pre, secret, post) => (pre.startsWith('PWD') ? m : keep('conn-password')(m, pre, secret, post)),
  },
  {
    kind: 'attach',
    re: new RegExp(String.raw`${SSH}([A-Za-z0-9_/-]+)(@[a-z0-9.-]*tmate\.io\b)`, 'g'),
    replace: (m, pre, token, post) => (isTmateRw(token) ? `${pre}${mark('attach')}${post}` : m),
  },
  {
    kind: 'attach',
    re: /(\bhttps?:\/\/(?:[a-z0-9-]+\.)*tmate\.io\/t\/)([A-Za-z0-9_/-]+)()/g,
    replace: (m, pre, token) => (isTmateRw(token) ? `${pre}${mark('attach')}` : m),
  },
  {
    kind: 'attach',
    re: new RegExp(String.raw`${SSH}([A-Za-z0-9:=+/_-]+)(@[a-z0-9.-]*upterm\.dev\b)`, 'g'),
    replace: keep('attach'),
  },
  // Self-hosted relays: an ssh "user" of 40+ random characters is a session token, not a login.
  {
    kind: 'attach',
    re: new RegExp(String.raw`${SSH}([A-Za-z0-9][A-Za-z0-9:=+/_-]{39,255})(@[A-Za-z0-9.-]+)`, 'g'),
    replace: (m, pre, token, post) => (looksRandom(token) || /[a-z].*[A-Z]|[A-Z].*[a-z]/.test(token) ? `${pre}${mark('attach')}${post}` : m),
  },
  { kind: 'handoff-token', re: /\bhnd_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])/g, replace: whole('handoff-token') },
  { kind: 'github', re: /\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})\b/g, replace: whole('github') },
  { kind: 'gitlab', re: /\bglpat-[A-Za-z0-9_-]{20,}/g, replace: whole('gitlab') },
  { kind: 'openai', re: /\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}/g, replace: whole('openai', looksRandom) },
  { kind: 'slack', re: /\bxox[baprs]-[A-Za-z0-9-]{10,}/g, replace: whole('slack') },
  { kind: 'aws', re: /\b(?:AKIA|ASIA)[A-Z0-9]{16}\b/g, replace: whole('aws') },
  {
    kind: 'aws',
    re: /(\b(?:aws_?secret_?access_?key|secret_?access_?key)["']?\s*[=:]\s*["']?)([A-Za-z0-9/+=]{40})()/gi,
    replace: keep('aws'),
  },
  // A word after "Bearer"/"Basic" is a credential when it looks like one: has a digit or a
  // token68 symbol, or is too long to be prose ("Bearer of bad news" stays).
  {
    kind: 'bearer',
    re: /(\b(?:Bearer|Basic)\s+)([A-Za-z0-9\-._~+/]{8,}=*)()/gi,
    replace: (m, pre, token) => (/[0-9\-._~+/=]/.test(token) || token.length >= 20 ? `${pre}${mark('bearer')}` : m),
  },
  // NAME=value and "name": "value" where the name says secret (GITHUB_TOKEN=…, ?api_key=…).
  {
    kind: 'env',
    re: /((?<![A-Za-z0-9_])([A-Za-z][A-Za-z0-9_.-]{2,63})=)("[^"]*"|'[^']*'|[^\s"'&;|]+)()/g,
    replace: (m, pre, name, value) => (isSecretName(name) && !alreadyRedacted(value) ? `${pre}${mark('env')}` : m),
  },
  {
    kind: 'env',
    re: /("([A-Za-z][A-Za-z0-9_.-]{2,63})"\s*:\s*")((?:[^"\\]|\\.)+)(")/g,
    replace: (m, pre, name, value, post) => (isSecretName(name) && !alreadyRedacted(value) ? `${pre}${mark('env')}${post}` : m),
  },
];

/** Replaces every secret-looking substring of `s` with `[REDACTED:<kind>]`. Idempotent. */
export function redactText(s: string): string {
  let out = s;
  for (const rule of RULES) out = out.replace(rule.re, rule.replace as (m: string, ...g: unknown[]) => string);
  return out;
}

/** Defines an own property even for `__proto__`, so copying input keys can't change a prototype. */
function setOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function redactValue(value: unknown, depth: number, ancestors: WeakSet<object>, secret: boolean): unknown {
  if (typeof value === 'string') return secret && value !== '' ? mark('env') : redactText(value);
  if (value === null || typeof value !== 'object') return value;
  if (value instanceof Date || ArrayBuffer.isView(value)) return value;
  if (ancestors.has(value)) return '[Circular]';
  if (depth >= MAX_REDACT_DEPTH) return '[Truncated]';
  ancestors.add(value);
  try {
    if (Array.isArray(value)) return value.map((v) => redactValue(v, depth + 1, ancestors, secret));
    if (value instanceof Error) return { name: value.name, message: redactText(value.message) };
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      // Everything under a secret-named key is secret, e.g. `auth: {user, pass}`.
      setOwn(out, redactText(k), redactValue(v, depth + 1, ancestors, secret || isSecretName(k)));
    }
    return out;
  } finally {
    // Only the current path counts as a cycle; the same object reached twice is fine.
    ancestors.delete(value);
  }
}

/**
 * A redacted deep copy of `value` (plain objects and arrays; the input is never mutated).
 * Non-empty strings under a secret-named key become `[REDACTED:env]`; other strings go
 * through `redactText`. Cycles become `"[Circular]"`, nesting past MAX_REDACT_DEPTH
 * `"[Truncated]"`, errors `{name, message}`, class instances plain objects of their own
 * enumerable fields (JSON semantics). Dates and binary views are returned as they are.
 */
export function redact<T>(value: T): T {
  return redactValue(value, 0, new WeakSet(), false) as T;
}

/** Redacts an environment snapshot: secret-named vars wholesale, the rest by content. */
export function redactEnv(env: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) setOwn(out, k, isSecretName(k) && v !== '' ? mark('env') : redactText(v));
  return out;
}
