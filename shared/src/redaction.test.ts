import { describe, expect, it } from 'vitest';
import { isSecretName, MAX_REDACT_DEPTH, redact, redactEnv, redactText } from './redaction.js';

// Fake credentials are assembled at run time so secret scanners don't flag this file.
const rnd = (n: number) => 'a1B2c3D4e5'.repeat(Math.ceil(n / 10)).slice(0, n);
const ghp = 'ghp_' + rnd(36);
const jwt = 'eyJhbGciOiJIUzI1NiJ9.' + 'eyJzdWIiOiIxMjM0NTY3ODkwIn0.' + 'dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U';
const handoffToken = 'hnd_' + rnd(40) + '-_x';
const awsKey = 'AKIA' + 'IOSFODNN7EXAMPLE';
const awsSecret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCY' + 'EXAMPLEKEY';
const pem = ['-----BEGIN RSA PRIVATE KEY-----', 'MIIEowIBAAKCAQEA' + rnd(40), rnd(64), '-----END RSA PRIVATE KEY-----'].join('\n');
const tmateToken = 'Xk3' + rnd(22);
const selfHostedToken = rnd(44);

// [input, expected output]
const cases: Array<[string, string]> = [
  // aws
  [`key ${awsKey} used`, 'key [REDACTED:aws] used'],
  ['ASIA' + 'Y34FZKBOKMUTVV7A', '[REDACTED:aws]'],
  [`aws_secret_access_key = ${awsSecret}`, 'aws_secret_access_key = [REDACTED:aws]'],
  [`AWS_SECRET_ACCESS_KEY=${awsSecret}`, 'AWS_SECRET_ACCESS_KEY=[REDACTED:aws]'],
  // gcp
  ['{"type": "service_account", "private_key_id": "' + rnd(40) + '"}', '{"type": "service_account", "private_key_id": "[REDACTED:gcp]"}'],
  [`{"private_key": "${pem.replace(/\n/g, '\\n')}\\n", "client_email": "x@y.iam.gserviceaccount.com"}`,
    '{"private_key": "[REDACTED:gcp]", "client_email": "x@y.iam.gserviceaccount.com"}'],
  // github / gitlab / openai / slack
  [`token ${ghp}`, 'token [REDACTED:github]'],
  ['gho_' + rnd(36), '[REDACTED:github]'],
  ['ghu_' + rnd(36) + ' ghs_' + rnd(36) + ' ghr_' + rnd(36), '[REDACTED:github] [REDACTED:github] [REDACTED:github]'],
  ['github_pat_' + rnd(22) + '_' + rnd(59), '[REDACTED:github]'],
  ['glpat-' + rnd(20), '[REDACTED:gitlab]'],
  ['sk-' + rnd(48), '[REDACTED:openai]'],
  ['OPENAI=sk-proj-' + rnd(60) + '-' + rnd(20), 'OPENAI=[REDACTED:openai]'],
  ['xoxb-' + '1234567890-' + rnd(24), '[REDACTED:slack]'],
  ['xoxp-1234-5678-' + rnd(12), '[REDACTED:slack]'],
  // bearer
  ['Authorization: Bearer abc123def456ghi', 'Authorization: Bearer [REDACTED:bearer]'],
  [`Authorization: Bearer ${jwt}`, 'Authorization: Bearer [REDACTED:jwt]'],
  ['Authorization: Basic dXNlcjpwYXNzd29yZA==', 'Authorization: Basic [REDACTED:bearer]'],
  // url / connection-string passwords
  ['postgres://app:s3cr3t@db.internal:5432/app', 'postgres://app:[REDACTED:url-password]@db.internal:5432/app'],
  ['redis://:hunter2@cache:6379/0', 'redis://:[REDACTED:url-password]@cache:6379/0'],
  ['see https://bob:p%40ss/w0rd@example.com/x', 'see https://bob:[REDACTED:url-password]@example.com/x'],
  ['Server=db;User Id=sa;Password=Pa55w0rd!;Encrypt=true', 'Server=db;User Id=sa;Password=[REDACTED:conn-password];Encrypt=true'],
  ["host=db user=app password='two words' dbname=app", 'host=db user=app password=[REDACTED:conn-password] dbname=app'],
  ['Driver={ODBC Driver 18};Uid=sa;Pwd=s3cret;', 'Driver={ODBC Driver 18};Uid=sa;Pwd=[REDACTED:conn-password];'],
  // pem
  [`before\n${pem}\nafter`, 'before\n[REDACTED:pem]\nafter'],
  ['-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ (truncated', '[REDACTED:pem]'],
  // jwt
  [`cookie=${jwt};`, 'cookie=[REDACTED:jwt];'],
  // attach strings
  [`ssh ${tmateToken}@nyc1.tmate.io`, 'ssh [REDACTED:attach]@nyc1.tmate.io'],
  [`ssh -p2200 ${tmateToken}@lon1.tmate.io`, 'ssh -p2200 [REDACTED:attach]@lon1.tmate.io'],
  [`web: https://tmate.io/t/${tmateToken}`, 'web: https://tmate.io/t/[REDACTED:attach]'],
  [`ssh ro-${tmateToken}@nyc1.tmate.io`, `ssh ro-${tmateToken}@nyc1.tmate.io`], // RO is shareable
  [`ssh ${rnd(20)}:MTAuMC4wLjE6MjI=@uptermd.upterm.dev`, 'ssh [REDACTED:attach]@uptermd.upterm.dev'],
  [`ssh -p 2222 ${selfHostedToken}@relay.corp.example`, 'ssh -p 2222 [REDACTED:attach]@relay.corp.example'],
  ['ssh ' + 'QwErTyUiOpAsDfGhJkLzXcVbNmQwErTyUiOpAsDf@relay.example', 'ssh [REDACTED:attach]@relay.example'],
  ['ssh ' + 'a'.repeat(40) + '@host.example', 'same'],
  // handoff tokens
  [`HANDOFF=${handoffToken}`, 'HANDOFF=[REDACTED:handoff-token]'],
  // named secrets inside text
  ['GITHUB_TOKEN=abc DEBUG=1', 'GITHUB_TOKEN=[REDACTED:env] DEBUG=1'],
  ['https://api.example.com/v1?api_key=abcdef&page=2', 'https://api.example.com/v1?api_key=[REDACTED:env]&page=2'],
  ['{"apiKey":"plain-value","region":"eu"}', '{"apiKey":"[REDACTED:env]","region":"eu"}'],

  // negatives: left exactly as they are
  ['The quick brown fox skips over the lazy dog; skip this step.', 'same'],
  ['run 0190a5c2-7b3e-7c11-9a2f-3b1d2e4f5a6b finished', 'same'],
  ['sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08', 'same'],
  ['ssh alice@example.com', 'same'],
  ['ssh -p 22 -i ~/.ssh/id_ed25519 deploy@10.0.0.12', 'same'],
  ['git clone git@github.com:acme/handoff.git', 'same'],
  ['open https://example.com:8443/docs?page=2#top', 'same'],
  ['https://host:443/@alice is a profile', 'same'],
  ['the Bearer of bad news', 'same'],
  ['basic understanding of the system', 'same'],
  ['use sk-learn-compatible-estimators here', 'same'],
  ['the password is required', 'same'],
  ['keyboard=us monkey=george author=Ann', 'same'],
  ['ghp_short and glpat-x and xoxb-1', 'same'],
  ['eyJust a word. eyJ.x.y', 'same'],
  ['AKIAshort is not a key', 'same'],
  ['PWD=/home/alice HOME=/home/alice', 'same'],
  [`publicKey=${rnd(30)}`, 'same'],
];

describe('redactText', () => {
  it.each(cases)('%s', (input, expected) => {
    expect(redactText(input)).toBe(expected === 'same' ? input : expected);
  });

  it('is idempotent', () => {
    for (const [input] of cases) expect(redactText(redactText(input))).toBe(redactText(input));
  });

  it('never leaves the secret itself behind', () => {
    const secrets = [ghp, jwt, handoffToken, awsKey, awsSecret, tmateToken, selfHostedToken, 's3cr3t', 'Pa55w0rd!'];
    const text = redactText(cases.filter(([, e]) => e !== 'same').map(([i]) => i).join('\n'));
    for (const s of secrets) expect(text).not.toContain(s);
  });
});

describe('redactText on hostile input', () => {
  // Audit metadata is user input: no rule may backtrack quadratically on a long string.
  it.each([
    ['url-ish', ('a://b:' + 'c'.repeat(100)).repeat(5000)],
    ['dotted', 'a.'.repeat(300_000)],
    ['ssh', ('ssh ' + 'a1'.repeat(100) + ' ').repeat(3000)],
    ['sk-', 'sk-'.repeat(150_000)],
  ])('%s stays fast', (_name, input) => {
    const started = performance.now();
    redactText(input);
    expect(performance.now() - started).toBeLessThan(1000);
  });
});

describe('isSecretName', () => {
  it.each([
    ['API_KEY', true], ['apiKey', true], ['x-api-key', true], ['PRIVATE_KEY', true], ['key', true], ['APIKey', true],
    ['GITHUB_TOKEN', true], ['client_secret', true], ['DB_PASSWORD', true], ['passwd', true], ['AWS_CREDENTIALS', true],
    ['Authorization', true], ['auth', true], ['proxy-authorization', true], ['accesskey', true],
    ['keyboard', false], ['monkey', false], ['author', false], ['publicKey', false], ['keyId', false],
    ['sortKey', false], ['PWD', false], ['labels', false], ['authType', false],
  ] as const)('%s → %s', (name, secret) => {
    expect(isSecretName(name)).toBe(secret);
  });
});

describe('redact (deep)', () => {
  it('redacts by key and by content, without mutating the input', () => {
    const input = {
      runId: 'r1',
      env: { API_KEY: 'abc', EMPTY_TOKEN: '', HOME: '/root' },
      headers: [{ name: 'x', value: `Bearer ${ghp}` }],
      auth: { user: 'bob', pass: 'hunter2', retries: 3 },
      maxTokens: 4096,
    };
    const before = structuredClone(input);
    expect(redact(input)).toEqual({
      runId: 'r1',
      env: { API_KEY: '[REDACTED:env]', EMPTY_TOKEN: '', HOME: '/root' },
      headers: [{ name: 'x', value: 'Bearer [REDACTED:github]' }],
      auth: { user: '[REDACTED:env]', pass: '[REDACTED:env]', retries: 3 },
      maxTokens: 4096,
    });
    expect(input).toEqual(before);
  });

  it('passes primitives through and keeps shared (non-cyclic) references', () => {
    expect(redact(42)).toBe(42);
    expect(redact(null)).toBe(null);
    expect(redact(`x ${jwt}`)).toBe('x [REDACTED:jwt]');
    const shared = { a: 1 };
    expect(redact({ x: shared, y: shared })).toEqual({ x: { a: 1 }, y: { a: 1 } });
  });

  it('replaces cycles instead of recursing forever', () => {
    const a: Record<string, unknown> = { name: 'a' };
    a.self = a;
    a.list = [a];
    expect(redact(a)).toEqual({ name: 'a', self: '[Circular]', list: ['[Circular]'] });
  });

  it('truncates nesting deeper than the limit', () => {
    let deep: Record<string, unknown> = { leaf: 'x' };
    for (let i = 0; i < 100; i++) deep = { d: deep };
    let out = redact(deep) as Record<string, unknown>;
    let depth = 0;
    while (typeof out.d === 'object') { out = out.d as Record<string, unknown>; depth++; }
    expect(out.d).toBe('[Truncated]');
    expect(depth).toBe(MAX_REDACT_DEPTH - 1);
  });

  it('cannot be used to pollute prototypes', () => {
    const input = JSON.parse('{"__proto__": {"polluted": "yes", "token": "t"}, "constructor": {"prototype": {"polluted": "yes"}}}');
    const out = redact(input) as Record<string, unknown>;
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
    expect((out as { polluted?: unknown }).polluted).toBeUndefined();
    expect(Object.getOwnPropertyDescriptor(out, '__proto__')?.value).toEqual({ polluted: 'yes', token: '[REDACTED:env]' });
  });

  it('turns errors into {name, message} with the message redacted', () => {
    expect(redact({ err: new Error(`auth failed for ${handoffToken}`) })).toEqual({
      err: { name: 'Error', message: 'auth failed for [REDACTED:handoff-token]' },
    });
  });
});

describe('redactEnv', () => {
  it('redacts secret names wholesale and other values by content', () => {
    const env = { PATH: '/usr/bin', SLACK_TOKEN: 'xyz', DATABASE_URL: 'postgres://u:pw@h/db', EDITOR: 'vim', NPM_AUTH: '' };
    expect(redactEnv(env)).toEqual({
      PATH: '/usr/bin',
      SLACK_TOKEN: '[REDACTED:env]',
      DATABASE_URL: 'postgres://u:[REDACTED:url-password]@h/db',
      EDITOR: 'vim',
      NPM_AUTH: '',
    });
    expect(env.SLACK_TOKEN).toBe('xyz');
  });
});
