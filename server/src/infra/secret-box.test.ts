import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadSecretKey, SecretBox } from './secret-box.js';

const attach = 'ssh Xk3a1B2c3D4e5a1B2c3D4e5a1B2@nyc1.tmate.io';

describe('SecretBox', () => {
  const box = new SecretBox(randomBytes(32));

  it('round-trips, with and without aad', () => {
    expect(box.open(box.seal(attach, 'session-1'), 'session-1')).toBe(attach);
    expect(box.open(box.seal('ünïcødé ✓'))).toBe('ünïcødé ✓');
    expect(box.open(box.seal(''))).toBe('');
  });

  it('uses a fresh IV every time and has the documented format', () => {
    const a = box.seal(attach);
    const b = box.seal(attach);
    expect(a).not.toBe(b);
    expect(a).toMatch(/^v1\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]+$/);
    expect(a).not.toContain('tmate');
  });

  // Flip one bit of the decoded bytes of each part (and break the framing) → must throw.
  it.each([1, 2, 3])('rejects a tampered part %i', (index) => {
    const parts = box.seal(attach, 's').split('.');
    const bytes = Buffer.from(parts[index]!, 'base64url');
    bytes[0] = bytes[0]! ^ 0x01;
    parts[index] = bytes.toString('base64url');
    expect(() => box.open(parts.join('.'), 's')).toThrow('secret could not be decrypted');
  });

  it.each([
    ['another version', (s: string) => s.replace(/^v1/, 'v2')],
    ['a missing part', (s: string) => s.split('.').slice(0, 3).join('.')],
    ['an extra part', (s: string) => `${s}.AAAA`],
    ['a truncated tag', (s: string) => s.split('.').map((p, i) => (i === 2 ? p.slice(0, 8) : p)).join('.')],
    ['a non-canonical last character', (s: string) => s.slice(0, -1) + (s.endsWith('A') ? 'B' : 'A')],
    ['junk characters', (s: string) => s.replace('.', '.!')],
    ['an empty string', () => ''],
  ])('rejects %s', (_name, mangle) => {
    expect(() => box.open(mangle(box.seal(attach, 's')), 's')).toThrow('secret could not be decrypted');
  });

  it('rejects the wrong aad, a missing aad and the wrong key', () => {
    const sealed = box.seal(attach, 'session-1');
    expect(() => box.open(sealed, 'session-2')).toThrow('secret could not be decrypted');
    expect(() => box.open(sealed)).toThrow('secret could not be decrypted');
    expect(() => new SecretBox(randomBytes(32)).open(sealed, 'session-1')).toThrow('secret could not be decrypted');
  });

  it('refuses keys that are not 32 bytes', () => {
    expect(() => new SecretBox(randomBytes(16))).toThrow(/32-byte/);
  });
});

describe('loadSecretKey', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'handoff-secret-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('accepts 64 hex characters or base64 of 32 bytes', () => {
    const key = randomBytes(32);
    expect(loadSecretKey({ configured: key.toString('hex'), dataDir: dir })).toEqual(key);
    expect(loadSecretKey({ configured: key.toString('base64'), dataDir: dir })).toEqual(key);
    expect(loadSecretKey({ configured: key.toString('base64url'), dataDir: dir })).toEqual(key);
  });

  it.each(['too-short', 'zz'.repeat(32), randomBytes(16).toString('hex'), randomBytes(31).toString('base64')])(
    'refuses a bad configured key without echoing it',
    (bad) => {
      let message = '';
      try {
        loadSecretKey({ configured: bad, dataDir: dir });
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).toContain('HANDOFF_SECRET_KEY');
      expect(message).not.toContain(bad);
    },
  );

  it('creates <dataDir>/secret.key with mode 0600 (and the dir), then reuses it', () => {
    const dataDir = join(dir, 'nested', 'data');
    const first = loadSecretKey({ dataDir });
    const file = join(dataDir, 'secret.key');
    expect(first).toHaveLength(32);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, 'utf8').trim()).toBe(first.toString('hex'));
    expect(loadSecretKey({ dataDir })).toEqual(first);
    expect(loadSecretKey({ configured: '', dataDir })).toEqual(first);
  });

  it('refuses a key file other users can read', () => {
    const file = join(dir, 'secret.key');
    writeFileSync(file, randomBytes(32).toString('hex'));
    chmodSync(file, 0o644);
    expect(() => loadSecretKey({ dataDir: dir })).toThrow(/accessible by other users \(mode 644\).*chmod 600/);
  });

  it('refuses a key file that does not hold a key', () => {
    const file = join(dir, 'secret.key');
    writeFileSync(file, 'not a key', { mode: 0o600 });
    expect(() => loadSecretKey({ dataDir: dir })).toThrow(/does not hold a 32-byte key/);
  });
});
