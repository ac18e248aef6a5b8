import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

// Encryption at rest for RW attach data (DESIGN.md §2 "Attach data"): AES-256-GCM with a
// random 96-bit IV per value and optional AAD that binds a ciphertext to its row.

const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const VERSION = 'v1';
const KEY_FILE = 'secret.key';

/** Parses a 64-hex or base64/base64url (32 bytes) key; null when it is neither. */
function parseKey(text: string): Buffer | null {
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(text)) {
    const key = Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    if (key.length === KEY_BYTES) return key;
  }
  return null;
}

/**
 * The 32-byte key for SecretBox. `configured` (HANDOFF_SECRET_KEY) wins; otherwise the key
 * lives in `<dataDir>/secret.key` (hex), generated with mode 0600 on first start. Every hub
 * node must share the same key, so multi-node deployments set HANDOFF_SECRET_KEY.
 * Throws a message that names the setting or file but never contains key material.
 */
export function loadSecretKey(opts: {
  configured?: string | undefined;
  dataDir: string;
  /** Key file name inside dataDir. Default secret.key (the audit signing seed uses its own). */
  file?: string;
  /** The setting named in errors. Default HANDOFF_SECRET_KEY. */
  setting?: string;
}): Buffer {
  const configured = opts.configured?.trim();
  if (configured) {
    const key = parseKey(configured);
    if (!key) {
      throw new Error(
        `${opts.setting ?? 'HANDOFF_SECRET_KEY'} must be 64 hex characters or the base64 of 32 bytes (got ${configured.length} characters); ` +
          `generate one with: openssl rand -hex 32`,
      );
    }
    return key;
  }
  const path = join(opts.dataDir, opts.file ?? KEY_FILE);
  return readKeyFile(path) ?? createKeyFile(opts.dataDir, path);
}

/** The key in `path`, null when the file does not exist; refuses group/world-accessible files. */
function readKeyFile(path: string): Buffer | null {
  let mode: number;
  try {
    const stat = statSync(path);
    if (!stat.isFile()) throw new Error(`secret key file ${path} is not a regular file`);
    mode = stat.mode;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  if (process.platform !== 'win32' && (mode & 0o077) !== 0) {
    throw new Error(
      `secret key file ${path} is accessible by other users (mode ${(mode & 0o777).toString(8)}); ` +
        `restrict it with: chmod 600 ${path}`,
    );
  }
  const key = parseKey(readFileSync(path, 'utf8').trim());
  if (!key) throw new Error(`secret key file ${path} does not hold a 32-byte key (64 hex characters)`);
  return key;
}

function createKeyFile(dataDir: string, path: string): Buffer {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const key = randomBytes(KEY_BYTES);
  // Write a private temp file, then link it into place: link is atomic and fails if another
  // process won the race, in which case everyone uses the winner's key.
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  writeFileSync(tmp, key.toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
  try {
    linkSync(tmp, path);
    return key;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const winner = readKeyFile(path);
    if (!winner) throw err;
    return winner;
  } finally {
    unlinkSync(tmp);
  }
}

const decryptFailed = () => new Error('secret could not be decrypted');

/** Strict base64url: Node's decoder ignores junk and spare bits, which would hide tampering. */
function decodePart(part: string): Buffer {
  const bytes = Buffer.from(part, 'base64url');
  if (bytes.toString('base64url') !== part) throw decryptFailed();
  return bytes;
}

/** Seals and opens small secrets: `v1.<iv>.<tag>.<ciphertext>`, each part base64url. */
export class SecretBox {
  readonly #key: Buffer;

  constructor(key: Buffer) {
    if (key.length !== KEY_BYTES) throw new Error(`SecretBox needs a ${KEY_BYTES}-byte key`);
    this.#key = Buffer.from(key);
  }

  /** Encrypts `plaintext`; `aad` (e.g. the session id) must be given again to open it. */
  seal(plaintext: string, aad?: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv, { authTagLength: TAG_BYTES });
    if (aad !== undefined) cipher.setAAD(Buffer.from(aad, 'utf8'));
    const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return [VERSION, iv, cipher.getAuthTag(), ciphertext].map((p) => (typeof p === 'string' ? p : p.toString('base64url'))).join('.');
  }

  /** Decrypts a sealed value; any tampering, wrong key or wrong `aad` throws the same error. */
  open(sealed: string, aad?: string): string {
    const parts = sealed.split('.');
    if (parts.length !== 4 || parts[0] !== VERSION) throw decryptFailed();
    const [iv, tag, ciphertext] = parts.slice(1).map(decodePart) as [Buffer, Buffer, Buffer];
    if (iv.length !== IV_BYTES || tag.length !== TAG_BYTES) throw decryptFailed();
    try {
      // authTagLength pins the tag size: GCM would otherwise accept a truncated tag.
      const decipher = createDecipheriv('aes-256-gcm', this.#key, iv, { authTagLength: TAG_BYTES });
      if (aad !== undefined) decipher.setAAD(Buffer.from(aad, 'utf8'));
      decipher.setAuthTag(tag);
      return Buffer.concat([decipher.update(ciphertext), decipher.final()]).toString('utf8');
    } catch (err) {
      throw Object.assign(decryptFailed(), { cause: err });
    }
  }
}
