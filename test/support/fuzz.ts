/** Deterministic hostile-payload generator (seeded), for the fuzz tests. */
export function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NASTY_STRINGS = ['', ' ', '\u0000', '\u202e\u0000ab', '💥'.repeat(1000), 'x'.repeat(300_000), '../../../etc/passwd', "'; drop table runs; --", '<script>alert(1)</script>', '%00', '{{7*7}}', 'null', 'NaN'];
const NASTY_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', '', '\u0000', 'x'.repeat(5000), '$where', '💥'];

function nastyValue(r: () => number, depth = 0): unknown {
  const pick = Math.floor(r() * 10);
  switch (pick) {
    case 0: return NASTY_STRINGS[Math.floor(r() * NASTY_STRINGS.length)];
    case 1: return [-1, 0, 1e308, -1e308, 2 ** 53 + 1, 0.5, Number.MAX_SAFE_INTEGER][Math.floor(r() * 7)];
    case 2: return r() < 0.5;
    case 3: return null;
    case 4: return depth > 3 ? [] : Array.from({ length: Math.floor(r() * 4) }, () => nastyValue(r, depth + 1));
    case 5: return deep(Math.floor(r() * 200) + 50);
    case 6: return depth > 3 ? {} : nastyObject(r, depth + 1);
    case 7: return { $gt: '' };
    case 8: return '9'.repeat(400);
    default: return { __proto__: { polluted: true } };
  }
}

function deep(n: number): unknown {
  let v: unknown = 'bottom';
  for (let i = 0; i < n; i++) v = { a: v };
  return v;
}

function nastyObject(r: () => number, depth = 0): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  const n = 1 + Math.floor(r() * 3);
  for (let i = 0; i < n; i++) Object.defineProperty(o, NASTY_KEYS[Math.floor(r() * NASTY_KEYS.length)]!, { value: nastyValue(r, depth), enumerable: true, writable: true, configurable: true });
  return o;
}

/**
 * `count` payloads that must all be invalid for a strict schema with a given valid base:
 * each is a non-object, a base with a field of the wrong type / a hostile value, or a base
 * with an unknown (often prototype-polluting) key.
 */
export function hostilePayloads(base: Record<string, unknown>, count: number, seed: number): unknown[] {
  const r = rng(seed);
  const keys = Object.keys(base);
  const out: unknown[] = [];
  while (out.length < count) {
    const kind = Math.floor(r() * 4);
    if (kind === 0) out.push([42, 'text', true, [], [base], 1e308][Math.floor(r() * 6)]);
    else if (kind === 1 && keys.length) {
      const k = keys[Math.floor(r() * keys.length)]!;
      const v = nastyValue(r);
      // Only keep values that cannot be valid for the field (a different JS type or a bad shape).
      if (typeof v === typeof base[k] && typeof v !== 'object') continue;
      out.push({ ...base, [k]: v });
    } else {
      const o: Record<string, unknown> = { ...base };
      Object.defineProperty(o, NASTY_KEYS[Math.floor(r() * NASTY_KEYS.length)]! || 'extra', { value: nastyValue(r), enumerable: true, writable: true, configurable: true });
      out.push(o);
    }
  }
  return out;
}
