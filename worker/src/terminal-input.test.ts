import { describe, expect, it } from 'vitest';
import { sendKeysInvocations } from './terminal-input.js';

// What tmux does with these commands is tested against a real pane in operator-shell.test.ts;
// here: the split, and that no invocation can exceed tmux's 16 KiB command limit.
const packedBytes = (args: string[]) => args.reduce((n, a) => n + Buffer.byteLength(a) + 1, 0);

describe('sendKeysInvocations', () => {
  it('sends text literally and control bytes and `;` as raw bytes, in order, in one invocation', () => {
    expect(sendKeysInvocations('%3', '-rf é;ls\r\x03\x00')).toEqual([
      [
        ...['send-keys', '-t', '%3', '-l', '--', '-rf é', ';'],
        ...['send-keys', '-t', '%3', '-H', '3b', ';'],
        ...['send-keys', '-t', '%3', '-l', '--', 'ls', ';'],
        ...['send-keys', '-t', '%3', '-H', '0d', '03', '00'],
      ],
    ]);
  });

  it('never leaves an argument ending in `;` (tmux would take it for a separator) except the separators themselves', () => {
    for (const args of sendKeysInvocations('%0', 'a;b;;c\\;')) {
      const words = args.filter((a) => a !== ';');
      expect(words.filter((a) => a.endsWith(';'))).toEqual([]);
    }
  });

  it('cuts a 4096-character paste of wide characters or control bytes into invocations tmux accepts, losing nothing', () => {
    for (const data of ['界'.repeat(4096), '\r'.repeat(4096), '😀'.repeat(2048), 'ab\x01'.repeat(1365)]) {
      const invocations = sendKeysInvocations('%1', data);
      expect(invocations.length).toBeGreaterThan(0);
      for (const args of invocations) expect(packedBytes(args)).toBeLessThan(16_000);
      let typed = '';
      for (const args of invocations) {
        for (let i = 0; i < args.length; i++) {
          if (args[i] === '-l') typed += args[i + 2];
          if (args[i] === '-H') for (let j = i + 1; j < args.length && args[j] !== ';'; j++) typed += String.fromCharCode(Number.parseInt(args[j]!, 16));
        }
      }
      expect(typed).toBe(data);
    }
  });
});
