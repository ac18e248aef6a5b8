import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import type { AuditEvent, AuditHead } from '@handoff/shared';
import { canonicalJson, chainHash } from './hash-chain.js';

// Anchoring the audit chain (docs/audit.md): the hub signs a run's chain head so that a tail
// cut by someone who can write the database (owner role, superuser) no longer matches a head
// published before the cut. Pure: keys come in, nothing is read or written.

/** DER prefix of a PKCS#8 Ed25519 private key; the 32-byte seed follows it. */
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
/** DER prefix of an SPKI Ed25519 public key; the raw 32-byte key follows it. */
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export interface SigningKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** Raw 32-byte public key. */
  publicRaw: Buffer;
  keyId: string;
}

/** An Ed25519 key pair from its 32-byte seed. */
export function signingKeyFromSeed(seed: Buffer): SigningKey {
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  const publicKey = createPublicKey(privateKey);
  const publicRaw = publicKey.export({ format: 'der', type: 'spki' }).subarray(SPKI_ED25519_PREFIX.length);
  return { privateKey, publicKey, publicRaw, keyId: keyIdOf(publicRaw) };
}

export function keyIdOf(publicRaw: Buffer): string {
  return createHash('sha256').update(publicRaw).digest('hex').slice(0, 16);
}

/**
 * An Ed25519 public key from what an operator hands the verifier: the raw 32 bytes in base64
 * (as `GET /api/audit/public-key` gives them) or hex, or an SPKI PEM block. Null otherwise.
 */
export function parsePublicKey(text: string): KeyObject | null {
  const t = text.trim();
  try {
    if (t.startsWith('-----BEGIN')) {
      const key = createPublicKey(t);
      return key.asymmetricKeyType === 'ed25519' ? key : null;
    }
    const raw = /^[0-9a-fA-F]{64}$/.test(t) ? Buffer.from(t, 'hex') : Buffer.from(t, 'base64');
    if (raw.length !== 32) return null;
    return createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, raw]), format: 'der', type: 'spki' });
  } catch {
    return null;
  }
}

/** The exact bytes a head's signature covers: RFC 8785 canonical JSON of the signed fields. */
export function headSigningInput(head: Pick<AuditHead, 'runId' | 'seq' | 'hash' | 'signedAt'>): Buffer {
  return Buffer.from(canonicalJson({ hash: head.hash, runId: head.runId, seq: head.seq, signedAt: head.signedAt }), 'utf8');
}

export function signHead(key: SigningKey, fields: { runId: string; seq: number; hash: string; signedAt: string }): AuditHead {
  const signature = sign(null, headSigningInput(fields), key.privateKey).toString('base64');
  return { runId: fields.runId, seq: fields.seq, hash: fields.hash, signedAt: fields.signedAt, keyId: key.keyId, signature };
}

export function headSignatureValid(publicKey: KeyObject, head: AuditHead): boolean {
  try {
    return verify(null, headSigningInput(head), publicKey, Buffer.from(head.signature, 'base64'));
  } catch {
    return false;
  }
}

export type ExportVerdict =
  | { ok: true; rows: number; head: AuditHead }
  | { ok: false; rows: number; reason: string; seq?: number; line?: number };

function isHead(v: unknown): v is AuditHead {
  const h = v as AuditHead;
  return !!h && typeof h === 'object' && typeof h.runId === 'string' && typeof h.seq === 'number' && typeof h.hash === 'string' && typeof h.signedAt === 'string' && typeof h.signature === 'string';
}

/**
 * Verifies a JSONL audit export offline (docs/audit.md has the algorithm in prose):
 * every row's hash and link is recomputed, every signed head (the export's last line and any
 * `heads` kept from earlier) must carry a valid signature, and the export must reach each
 * head's seq with that head's hash. A head beyond the export's last row is a cut tail.
 */
export function verifyExport(text: string, publicKey: KeyObject, heads: AuditHead[] = []): ExportVerdict {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const rows: Array<{ row: AuditEvent; line: number }> = [];
  let exportHead: AuditHead | null = null;
  for (const [i, l] of lines.entries()) {
    let v: unknown;
    try {
      v = JSON.parse(l);
    } catch {
      return { ok: false, rows: rows.length, line: i + 1, reason: `line ${i + 1} is not JSON` };
    }
    const o = v as { head?: unknown };
    if (o && typeof o === 'object' && 'head' in o) {
      if (i !== lines.length - 1) return { ok: false, rows: rows.length, line: i + 1, reason: `line ${i + 1}: the signed head must be the export's last line` };
      if (!isHead(o.head)) return { ok: false, rows: rows.length, line: i + 1, reason: `line ${i + 1}: malformed head` };
      exportHead = o.head;
    } else rows.push({ row: v as AuditEvent, line: i + 1 });
  }
  const all = [...(exportHead ? [exportHead] : []), ...heads];
  if (!all.length) return { ok: false, rows: rows.length, reason: 'no signed head: the export has no head line and none was given' };
  const runId = all[0]!.runId;
  for (const h of all) {
    if (h.runId !== runId) return { ok: false, rows: rows.length, reason: `heads of different runs (${runId}, ${h.runId})` };
    if (!headSignatureValid(publicKey, h)) return { ok: false, rows: rows.length, seq: h.seq, reason: `the head at seq ${h.seq} (signed ${h.signedAt}) has no valid signature from this key` };
  }

  // The chain: seq 1, 2, …; each row links to the previous hash and hashes to its own.
  let prev: string | null = null;
  const hashAt = new Map<number, string>();
  for (const [i, { row, line }] of rows.entries()) {
    const expected = i + 1;
    const at = `row seq ${row.seq} (line ${line}, id ${row.id})`;
    if (row.runId !== runId) return { ok: false, rows: i, seq: row.seq, line, reason: `${at} belongs to run ${row.runId}, not ${runId}` };
    if (row.seq !== expected) return { ok: false, rows: i, seq: row.seq, line, reason: `${at}: row missing before it (expected seq ${expected})` };
    if ((row.prevHash ?? null) !== prev) return { ok: false, rows: i, seq: row.seq, line, reason: `${at}: prevHash does not link to the previous row` };
    const { hash, prevHash: _p, ...fields } = row;
    if (chainHash(prev, fields) !== hash) return { ok: false, rows: i, seq: row.seq, line, reason: `${at}: hash does not match the row` };
    hashAt.set(row.seq, hash);
    prev = hash;
  }
  const last = rows.length;
  for (const h of all) {
    if (h.seq > last) {
      return { ok: false, rows: last, seq: h.seq, reason: `cut tail: a head signed ${h.signedAt} covers seq ${h.seq}, but the export ends at seq ${last} (${h.seq - last} row(s) missing)` };
    }
    if (h.seq > 0 ? hashAt.get(h.seq) !== h.hash : h.hash !== '') {
      return { ok: false, rows: last, seq: h.seq, reason: `rewritten chain: row seq ${h.seq} does not have the hash the head signed ${h.signedAt} names` };
    }
  }
  if (exportHead && exportHead.seq !== last) {
    return { ok: false, rows: last, seq: exportHead.seq, reason: `the export's own head covers seq ${exportHead.seq} but ${last} rows precede it (partial export: export without cursor or action filter)` };
  }
  const newest = all.reduce((a, b) => (b.seq > a.seq ? b : a));
  return { ok: true, rows: last, head: newest };
}
