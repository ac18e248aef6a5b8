import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { AuditEvent } from '@handoff/shared';
import { headSignatureValid, parsePublicKey, signHead, signingKeyFromSeed, verifyExport } from './audit-head.js';
import { canonicalJson, chainHash } from './hash-chain.js';

const RUN = '0190f0f0-0000-7000-8000-000000000001';
const key = signingKeyFromSeed(randomBytes(32));
const other = signingKeyFromSeed(randomBytes(32));

/** A valid chain of `n` rows, built the way appendAudit builds them. */
function chain(n: number): AuditEvent[] {
  const rows: AuditEvent[] = [];
  let prev: string | null = null;
  for (let seq = 1; seq <= n; seq++) {
    const fields = {
      id: `0190f0f0-0000-7000-8000-${String(seq).padStart(12, '0')}`, runId: RUN, seq, sessionId: null, correlationId: RUN,
      actorType: 'system', actorId: 'hub', action: seq === 1 ? 'run.create' : 'run.step', result: 'ok', at: new Date(1_700_000_000_000 + seq).toISOString(),
      metadata: { n: seq, note: 'é ☃ \u2028' },
    };
    const hash = chainHash(prev, fields);
    rows.push({ ...fields, prevHash: prev, hash });
    prev = hash;
  }
  return rows;
}

function exportOf(rows: AuditEvent[], signer = key, headSeq = rows.length): string {
  const head = signHead(signer, { runId: RUN, seq: headSeq, hash: rows[headSeq - 1]?.hash ?? '', signedAt: '2026-12-02T06:00:00.000Z' });
  return [...rows.map((r) => JSON.stringify(r)), JSON.stringify({ head })].join('\n') + '\n';
}

describe('canonical JSON (RFC 8785)', () => {
  it('matches the JCS rules for the values audit rows hold', () => {
    // Keys sorted by UTF-16 code units (RFC 8785 §3.2.3 example ordering), ES number form, no whitespace.
    expect(canonicalJson({ '\u20ac': 'Euro Sign', '\r': 'Carriage Return', '\ufb33': 'Hebrew Letter Dalet With Dagesh', '1': 'One', '\ud83d\ude00': 'Emoji', '\u0080': 'Control', '\u00f6': 'Latin Small Letter O With Diaeresis' }))
      .toBe('{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign","\ud83d\ude00":"Emoji","\ufb33":"Hebrew Letter Dalet With Dagesh"}');
    expect(canonicalJson({ numbers: [333333333.33333329, 1e30, 4.5, 0.002, 1e-27, -0, 0] })).toBe('{"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27,0,0]}');
    expect(canonicalJson({ b: [true, null, { d: 'x', c: '\u0000"\\' }], a: 1 })).toBe('{"a":1,"b":[true,null,{"c":"\\u0000\\"\\\\","d":"x"}]}');
  });
});

describe('signed heads and the offline verifier', () => {
  it('accepts an untouched export and a head kept from earlier', () => {
    const rows = chain(6);
    const earlier = signHead(key, { runId: RUN, seq: 4, hash: rows[3]!.hash, signedAt: '2026-12-02T05:00:00.000Z' });
    expect(verifyExport(exportOf(rows), key.publicKey, [earlier])).toMatchObject({ ok: true, rows: 6, head: { seq: 6 } });
  });

  it('detects a cut tail against a head signed before the cut, even when the export is re-signed', () => {
    const rows = chain(6);
    const before = signHead(key, { runId: RUN, seq: 6, hash: rows[5]!.hash, signedAt: '2026-12-02T05:00:00.000Z' });
    const verdict = verifyExport(exportOf(rows.slice(0, 4)), key.publicKey, [before]);
    expect(verdict).toMatchObject({ ok: false, seq: 6 });
    expect(!verdict.ok && verdict.reason).toMatch(/^cut tail: .* covers seq 6, but the export ends at seq 4 \(2 row\(s\) missing\)/);
  });

  it('names the first bad row: a missing row, a rewritten row, a broken link', () => {
    const rows = chain(5);
    const missing = verifyExport(exportOf([...rows.slice(0, 2), ...rows.slice(3)], key, 4), key.publicKey);
    expect(missing).toMatchObject({ ok: false, seq: 4, line: 3 });
    expect(!missing.ok && missing.reason).toContain('row missing before it (expected seq 3)');

    const forged = rows.map((r) => (r.seq === 3 ? { ...r, metadata: { forged: true } } : r));
    expect(verifyExport(exportOf(forged), key.publicKey)).toMatchObject({ ok: false, seq: 3, reason: expect.stringContaining('hash does not match') });

    // A rewritten chain (every hash recomputed after an edit) no longer matches an earlier head.
    const earlier = signHead(key, { runId: RUN, seq: 5, hash: rows[4]!.hash, signedAt: '2026-12-02T05:00:00.000Z' });
    const rebuilt = chain(5).map((r) => r);
    rebuilt[0] = { ...rebuilt[0]!, metadata: { n: 1, note: 'edited' } };
    let prev: string | null = null;
    for (const r of rebuilt) {
      const { hash: _h, prevHash: _p, ...f } = r;
      r.prevHash = prev;
      r.hash = chainHash(prev, f);
      prev = r.hash;
    }
    expect(verifyExport(exportOf(rebuilt), key.publicKey, [earlier])).toMatchObject({ ok: false, reason: expect.stringContaining('rewritten chain') });
  });

  it('refuses a head signed by another key, or altered after signing, or no head at all', () => {
    const rows = chain(3);
    expect(verifyExport(exportOf(rows, other), key.publicKey)).toMatchObject({ ok: false, reason: expect.stringContaining('no valid signature') });
    const head = signHead(key, { runId: RUN, seq: 3, hash: rows[2]!.hash, signedAt: '2026-12-02T06:00:00.000Z' });
    expect(headSignatureValid(key.publicKey, head)).toBe(true);
    expect(headSignatureValid(key.publicKey, { ...head, seq: 2 })).toBe(false);
    const noHead = rows.map((r) => JSON.stringify(r)).join('\n');
    expect(verifyExport(noHead, key.publicKey)).toMatchObject({ ok: false, reason: expect.stringContaining('no signed head') });
  });

  it('parses the public key as base64, hex or PEM, and nothing else', () => {
    const pem = key.publicKey.export({ format: 'pem', type: 'spki' }).toString();
    for (const text of [key.publicRaw.toString('base64'), key.publicRaw.toString('hex'), pem]) {
      expect(parsePublicKey(text)?.export({ format: 'der', type: 'spki' })).toEqual(key.publicKey.export({ format: 'der', type: 'spki' }));
    }
    expect(parsePublicKey('not a key')).toBeNull();
    expect(parsePublicKey(randomBytes(31).toString('base64'))).toBeNull();
  });
});
