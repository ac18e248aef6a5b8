import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { signingKeyFromSeed } from '../domain/audit-head.js';
import { loadAuditSigningKey } from './audit-anchor.js';

const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(path.join(tmpdir(), 'handoff-sign-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('the audit signing key', () => {
  it('is generated once into the data dir (0600) and reused: every restart signs with the same key', () => {
    const dir = tempDir();
    const first = loadAuditSigningKey({ dataDir: dir });
    const file = path.join(dir, 'audit-signing.key');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, 'utf8').trim()).toMatch(/^[0-9a-f]{64}$/);
    expect(loadAuditSigningKey({ dataDir: dir }).keyId).toBe(first.keyId);
    // Its own file: the secret box key is a different one.
    expect(() => statSync(path.join(dir, 'secret.key'))).toThrow();
  });

  it('comes from HANDOFF_AUDIT_SIGNING_KEY when set (the same on every node), and a bad value names the setting', () => {
    const seed = 'a'.repeat(64);
    const a = loadAuditSigningKey({ configured: seed, dataDir: tempDir() });
    const b = loadAuditSigningKey({ configured: Buffer.from(seed, 'hex').toString('base64'), dataDir: tempDir() });
    expect(a.publicRaw.equals(b.publicRaw)).toBe(true);
    expect(a.keyId).toBe(signingKeyFromSeed(Buffer.from(seed, 'hex')).keyId);
    expect(() => loadAuditSigningKey({ configured: 'short', dataDir: tempDir() })).toThrow(/^HANDOFF_AUDIT_SIGNING_KEY must be 64 hex characters/);
  });
});
