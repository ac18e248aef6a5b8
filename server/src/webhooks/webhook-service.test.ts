import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { retryDelayMs, slackBody, webhookSignature } from './webhook-service.js';

describe('webhook signature and retries', () => {
  it('signs "<t>.<raw body>" with HMAC-SHA256 in the documented header format', () => {
    const body = '{"event":"run.finished"}';
    const expected = createHmac('sha256', 'whsec_x').update(`1700000000.${body}`).digest('hex');
    expect(webhookSignature('whsec_x', body, 1700000000)).toBe(`t=1700000000,v1=${expected}`);
  });

  it('backs off exponentially with ±50 % jitter, capped at an hour', () => {
    expect(retryDelayMs(1000, 1, () => 0.5)).toBe(1000);
    expect(retryDelayMs(1000, 4, () => 0.5)).toBe(8000);
    expect(retryDelayMs(1000, 4, () => 0)).toBe(4000);
    expect(retryDelayMs(1000, 4, () => 0.999)).toBeLessThan(12_000);
    expect(retryDelayMs(5000, 40, () => 0.5)).toBe(3_600_000);
  });

  it('slack format: one line of text with a link to the run', () => {
    const e = { id: 'e', event: 'run.needs_operator' as const, at: 'now', runId: '0196a1b2-0000-7000-8000-000000000000', data: { reason: 'stuck' } };
    expect(slackBody(e, 'https://handoff.example.com/')).toEqual({ text: '[run.needs_operator] <https://handoff.example.com/runs/0196a1b2-0000-7000-8000-000000000000|run 0196a1b2> needs an operator: stuck' });
    expect(slackBody(e, null).text).toContain('(/runs/0196a1b2-0000-7000-8000-000000000000)');
  });
});
