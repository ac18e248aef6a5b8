import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase } from './orm.js';

describe('the embedded database', () => {
  const parent = mkdtempSync(path.join(tmpdir(), 'handoff-orm-'));
  afterAll(() => rmSync(parent, { recursive: true, force: true }));

  it('creates its data dir readable by its owner only (it also holds the generated secret key)', async () => {
    const dataDir = path.join(parent, 'data');
    const orm = await openDatabase({ dataDir });
    try {
      expect(statSync(dataDir).mode & 0o777).toBe(0o700);
      expect(statSync(path.join(dataDir, 'pglite')).mode & 0o777).toBe(0o700);
    } finally {
      await orm.close();
    }
  });
});
