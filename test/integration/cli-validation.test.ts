import { spawn } from 'node:child_process';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.js';

const CLI = path.resolve('server/src/cli.ts');

/**
 * Runs the real CLI (node + tsx's loader) against the test database. Through `sh`, so an
 * argument may be raw bytes (`printf`): a NUL or a lone surrogate cannot cross argv at all
 * (the OS takes C strings), invalid UTF-8 can.
 */
function cli(db: TestDatabase, args: string[], rawArg?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const script = `exec "$NODE" --import tsx "$CLI" "$@"${rawArg === undefined ? '' : ` "$(printf '${rawArg}')"`}`;
    const proc = spawn('/bin/sh', ['-c', script, 'sh', ...args], {
      env: { ...process.env, NODE: process.execPath, CLI, DATABASE_URL: db.url, LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    proc.once('error', reject);
    proc.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('CLI: arguments are validated with the API rules before the database sees them', () => {
  let db: TestDatabase;
  const users = async () => {
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      return (await c.query<{ name: string }>('select name from users order by name')).rows.map((r) => r.name);
    } catch (err) {
      // The CLI refuses before it opens (and migrates) the database: no table is no user.
      if ((err as { code?: string }).code === '42P01') return [];
      throw err;
    } finally {
      await c.end();
    }
  };

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it.each([
    ['10,000 characters', 'x'.repeat(10_000), 'at most 100 characters'],
    ['a newline', 'forged\nline', 'one line'],
    ['an escape sequence', 'red\u001b[31m', 'one line'],
    ['nothing', '', 'must not be empty'],
  ])('user add with a name holding %s: exit 2, a clear message, no user', async (_what, name, message) => {
    const r = await cli(db, ['user', 'add', '--name', name, '--role', 'operator']);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain('--name');
    expect(r.stderr).toContain(message);
    expect(r.stderr).not.toMatch(/character varying|invalid byte sequence|at .*\.ts:\d+/);
    expect(await users()).toEqual([]);
  });

  it('user add with a name that is not valid UTF-8: exit 2, a clear message, no user', async () => {
    const r = await cli(db, ['user', 'add', '--role', 'operator', '--name'], 'bad\\377\\376name');
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain('--name is not valid UTF-8 text');
    expect(await users()).toEqual([]);
  });

  it('a hostile --label and a malformed --id are refused the same way; a good name still works', async () => {
    const label = await cli(db, ['user', 'token', '--name', 'alice', '--label', 'y'.repeat(101)]);
    expect(label.code, label.stderr).toBe(2);
    expect(label.stderr).toContain('--label must be at most 100 characters');
    const id = await cli(db, ['token', 'revoke', '--id', "1' or '1'='1"]);
    expect(id.code, id.stderr).toBe(2);
    expect(id.stderr).toContain('--id');
    const ok = await cli(db, ['user', 'add', '--name', 'Zoë ‮ RTL is text', '--role', 'operator']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(await users()).toEqual(['Zoë ‮ RTL is text']);
  });
});
