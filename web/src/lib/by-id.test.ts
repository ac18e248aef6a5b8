import { describe, expect, it } from 'vitest';
import { mergeById, upsertById } from './by-id.js';

const byId = (a: { id: string }, b: { id: string }) => a.id.localeCompare(b.id);

describe('upsertById', () => {
  it('appends a new record and replaces a known one in place', () => {
    const list = [{ id: 'a', v: 1 }, { id: 'b', v: 1 }];
    expect(upsertById(list, { id: 'c', v: 1 })).toBe(true);
    expect(upsertById(list, { id: 'a', v: 2 })).toBe(false);
    expect(list).toEqual([{ id: 'a', v: 2 }, { id: 'b', v: 1 }, { id: 'c', v: 1 }]);
  });
});

describe('mergeById', () => {
  it('lets the page win, keeps records pushed meanwhile, and never duplicates', () => {
    const known = [{ id: 'b', v: 'pushed' }, { id: 'c', v: 'pushed' }];
    const page = [{ id: 'a', v: 'page' }, { id: 'b', v: 'page' }];
    expect(mergeById(known, page, byId)).toEqual([{ id: 'a', v: 'page' }, { id: 'b', v: 'page' }, { id: 'c', v: 'pushed' }]);
  });
});
