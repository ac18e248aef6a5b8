import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { hubRoleGrants } from './hub-role.js';

describe('the hub role grants', () => {
  it('are the statements docs/database-roles.sql documents, and refuse a role name that is not plain', () => {
    const doc = readFileSync(path.resolve('docs/database-roles.sql'), 'utf8');
    const documented = doc
      .slice(doc.indexOf('-- 2.'))
      .split('\n')
      .filter((l) => l.trim() && !l.startsWith('--'))
      .map((l) => l.replace(/;$/, ''));
    expect(documented).toEqual(hubRoleGrants('handoff_hub'));
    expect(() => hubRoleGrants('hub; drop table runs')).toThrow(/role name/);
    expect(() => hubRoleGrants('Hub')).toThrow(/role name/);
  });
});
