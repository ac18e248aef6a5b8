import { describe, expect, it } from 'vitest';
import { canonicalJson, chainHashParts, type ChainedFields } from './hash-chain.js';

const row = (over: Partial<ChainedFields> = {}): ChainedFields => ({
  id: '0190a0b0-0000-7000-8000-000000000001', runId: '0190a0b0-0000-7000-8000-0000000000aa', seq: 7, sessionId: null,
  correlationId: '0190a0b0-0000-7000-8000-0000000000cc', actorType: 'operator', actorId: 'u1', action: 'control.pause',
  result: 'ok', at: '2026-12-02T06:00:00.000Z', metadata: { seq: 7, to: 'paused' }, ...over,
});

describe('chainHashParts', () => {
  // The database splices the seq between the two parts: the result must be the very bytes chainHash hashes.
  it.each([
    ['a run row', row()],
    ['a session row', row({ sessionId: '0190a0b0-0000-7000-8000-0000000000dd', seq: 1 })],
    ['the global chain', row({ runId: null, seq: 123456 })],
    ['metadata imitating the cut', row({ metadata: { note: '},"seq":1,"sessionId":null}', seq: { seq: 2 }, z: '\\"' } })],
    ['unicode metadata', row({ metadata: { 'é': 'ü\u2028', '😀': [1, 2.5, null, true] } })],
  ])('%s', (_, r) => {
    const { seq, ...rest } = r;
    const { prefix, suffix } = chainHashParts(rest);
    expect(prefix + String(seq) + suffix).toBe(canonicalJson(r));
  });
});
