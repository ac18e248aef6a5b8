import { describe, expect, it } from 'vitest';
import { assertSafeText, findUnsafeText, textProblem } from './text-safety.js';

describe('text safety', () => {
  it('refuses NUL and lone surrogates; keeps every real character, RTL overrides and zero-width ones included', () => {
    expect(textProblem('a\u0000b')).toMatch(/U\+0000/);
    expect(textProblem('a\ud800b')).toMatch(/lone surrogate/);
    expect(textProblem('\udc00')).toMatch(/lone surrogate/);
    expect(textProblem('x\ud83d')).toMatch(/lone surrogate/);
    for (const ok of ['', 'plain', '😀 emoji', '\u202eevil', 'zero\u200bwidth', 'tab\tand\nnewline', '日本語']) expect(textProblem(ok)).toBeNull();
  });

  it('finds the first unsafe string or key anywhere, with its path', () => {
    expect(findUnsafeText({ title: 'ok', env: { GOOD: 'v', BAD: 'x\u0000' } })).toEqual({ path: 'env.BAD', problem: 'contains U+0000 (NUL)' });
    expect(findUnsafeText({ labels: { ['k\u0000']: 'v' } })).toMatchObject({ path: 'labels.k?', problem: /key/ });
    expect(findUnsafeText({ argv: ['ls', '\ud800'] })).toMatchObject({ path: 'argv.1' });
    expect(findUnsafeText({ a: 1, b: null, c: [true, { d: 'fine' }] })).toBeNull();
    let deep: unknown = 'x';
    for (let i = 0; i < 40; i++) deep = { deep };
    expect(findUnsafeText(deep)?.problem).toMatch(/nested deeper/);
  });

  it('answers VALIDATION naming the field', () => {
    expect(() => assertSafeText({ title: 'a\u0000' }, 'body')).toThrow(/invalid body at "title": contains U\+0000/);
    expect(() => assertSafeText({ title: 'fine' }, 'body')).not.toThrow();
  });
});
