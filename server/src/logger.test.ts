import { describe, expect, it } from 'vitest';
import { createLogger } from './logger.js';

describe('hub logger', () => {
  const capture = () => {
    const lines: string[] = [];
    return { lines, log: createLogger('debug', { write: (line: string) => void lines.push(line) }) };
  };

  it('runs every line through the redaction module and still writes valid JSON', () => {
    const { lines, log } = capture();
    const pat = `ghp_${'a1B2'.repeat(9)}`;
    log.error({ err: new Error('connect failed: postgres://app:hunter2@db.internal/handoff'), attempt: `git push https://x:${pat}@github.com/o/r` }, 'boom');
    expect(lines).toHaveLength(1);
    const line = lines[0]!;
    expect(line).not.toContain('hunter2');
    expect(line).not.toContain(pat);
    const parsed = JSON.parse(line) as { err: { message: string; stack: string }; attempt: string; msg: string };
    expect(parsed.err.message).toContain('[REDACTED:');
    expect(parsed.err.stack).not.toContain('hunter2');
    expect(parsed.msg).toBe('boom');
  });

  it('masks token fields by path', () => {
    const { lines, log } = capture();
    log.info({ token: 'plain-looking-value', auth: { token: 'another-plain-value' } }, 'hello');
    expect(lines[0]).not.toContain('plain-looking-value');
    expect(lines[0]).not.toContain('another-plain-value');
  });
});
