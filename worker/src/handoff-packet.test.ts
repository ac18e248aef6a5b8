import { describe, expect, it } from 'vitest';
import { handoffContextSchema } from '@handoff/shared';
import { handoffContext, handoffPacket } from './handoff-packet.js';

describe('handoffContext', () => {
  it('redacts secret-named variables wholesale and secret-shaped values in place, sorted by name', () => {
    const { context, omitted } = handoffContext(
      {
        cwd: '/srv/app',
        env: {
          PATH: '/usr/bin',
          API_TOKEN: 'abc',
          DB_PASSWORD: 'hunter2',
          DATABASE_URL: 'postgres://app:s3cret@db:5432/app',
          EMPTY_SECRET: '',
          HOME: '/home/agent',
        },
      },
      42,
    );
    expect(omitted).toBe(0);
    expect(context).toEqual({
      cwd: '/srv/app',
      env: {
        API_TOKEN: '[REDACTED:env]',
        DATABASE_URL: 'postgres://app:[REDACTED:url-password]@db:5432/app',
        DB_PASSWORD: '[REDACTED:env]',
        EMPTY_SECRET: '',
        HOME: '/home/agent',
        PATH: '/usr/bin',
      },
      scrollbackSeq: 42,
      commands: [],
    });
    expect(Object.keys(context.env)).toEqual(['API_TOKEN', 'DATABASE_URL', 'DB_PASSWORD', 'EMPTY_SECRET', 'HOME', 'PATH']);
  });

  it('stays within what the hub accepts: long values cut after redaction, oversized names and overflow left out', () => {
    const env: Record<string, string> = {
      LONG: `${'x'.repeat(9000)} ghp_abcdefghijklmnopqrstuvwxyz0123456789`,
      [`N${'A'.repeat(300)}`]: 'too long a name',
      TAIL: `${'y'.repeat(8185)} ghp_abcdefghijklmnopqrstuvwxyz0123456789`,
    };
    for (let i = 0; i < 40; i++) env[`Z_BULK_${String(i).padStart(2, '0')}`] = 'z'.repeat(8000);
    const { context, omitted } = handoffContext({ cwd: `/${'d'.repeat(5000)}`, env }, 7);
    expect(handoffContextSchema.parse(context)).toEqual(context);
    expect(context.cwd).toBeNull();
    expect(context.env.LONG).toHaveLength(8192);
    expect(context.env.TAIL).not.toContain('ghp_'); // redacted before the cut: a secret is never half-kept
    expect(omitted).toBeGreaterThan(1);
    const chars = Object.entries(context.env).reduce((n, [k, v]) => n + k.length + v.length, 0);
    expect(chars).toBeLessThanOrEqual(64 * 1024);
  });

  it('keeps a `__proto__` variable as data', () => {
    const env = JSON.parse('{"__proto__": "x", "A": "1"}') as Record<string, string>;
    const { context } = handoffContext({ cwd: null, env }, 0);
    expect(Object.keys(context.env)).toEqual(['A', '__proto__']);
    expect(Object.getPrototypeOf(context.env)).toBe(Object.prototype);
  });
});

describe('handoffPacket', () => {
  it('is the inbox line the agent SDK documents, with the summary redacted', () => {
    const context = { cwd: '/tmp', env: { A: '1' }, scrollbackSeq: 3, commands: [] };
    const packet = handoffPacket(
      'run-1',
      { summary: 'use Bearer abc.def-123456 next time', by: { id: 'u1', name: 'Ada' }, at: '2025-05-01T12:00:00.000Z' },
      'corr-1',
      context,
    );
    expect(packet).toEqual({
      type: 'handoff',
      ts: '2025-05-01T12:00:00.000Z',
      actor: 'Ada',
      actorId: 'u1',
      summary: 'use Bearer [REDACTED:bearer] next time',
      correlationId: 'corr-1',
      context: { cwd: '/tmp', env: { A: '1' }, scrollbackSeq: 3, commands: [], recording: '/api/task-runs/run-1/recording.cast' },
    });
  });
});

describe('handoffContext commands', () => {
  it('redacts each command line, keeps the newest HANDOFF_MAX_COMMANDS and counts the rest as omitted', () => {
    const commands = Array.from({ length: 105 }, (_, i) => ({ command: `echo ${i}`, exitStatus: i % 2, startOffset: i * 10, endOffset: i * 10 + 5 }));
    commands.push({ command: 'export API_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789', exitStatus: 0, startOffset: 2000, endOffset: 2100 });
    const { context, omitted } = handoffContext({ cwd: '/w', env: {}, commands }, 5);
    expect(context.commands).toHaveLength(100);
    expect(omitted).toBe(6);
    expect(context.commands[0]).toEqual({ command: 'echo 6', exitStatus: 0, startOffset: 60, endOffset: 65 });
    expect(context.commands.at(-1)!.command).not.toContain('ghp_abcdefghijklmnopqrstuvwxyz0123456789');
    expect(handoffContextSchema.parse(context)).toEqual(context);
  });
});
