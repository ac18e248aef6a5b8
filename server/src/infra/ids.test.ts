import { describe, expect, it } from 'vitest';
import { uuidv7 } from './ids.js';

describe('uuidv7', () => {
  it('is a v7 uuid whose first 48 bits are the millisecond it was made in', () => {
    const before = Date.now();
    const id = uuidv7();
    const after = Date.now();
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const ms = Number.parseInt(id.replace(/-/g, '').slice(0, 12), 16);
    expect(ms).toBeGreaterThanOrEqual(before);
    expect(ms).toBeLessThanOrEqual(after);
  });

  it('stays monotonic within a millisecond: 5,000 ids in creation order are already sorted, none repeated', () => {
    const ids = Array.from({ length: 5000 }, () => uuidv7());
    const ms = new Set(ids.map((id) => id.slice(0, 13)));
    expect(ms.size).toBeLessThan(ids.length); // many share a millisecond: the counter is what orders them
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
  });
});
