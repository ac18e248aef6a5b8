import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from './config.js';

const required = { HANDOFF_URL: 'http://127.0.0.1:3000', HANDOFF_WORKER_TOKEN: 'wkr_0123456789abcdef' };

describe('loadConfig', () => {
  it('applies the documented defaults and resolves the run directory', () => {
    const config = loadConfig(required);
    expect(config).toMatchObject({ WORKER_CAPACITY: 2, WORKER_COLS: 120, WORKER_ROWS: 32, FRAME_FLUSH_MS: 16, LOG_LEVEL: 'info' });
    expect(config.WORKER_RUN_DIR).toBe(join(tmpdir(), `handoff-worker-${process.getuid!()}`));
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('refuses a bad environment with a message naming every bad variable', () => {
    expect(() => loadConfig({ HANDOFF_URL: 'not a url', WORKER_CAPACITY: '0' })).toThrow(/HANDOFF_URL[\s\S]*HANDOFF_WORKER_TOKEN[\s\S]*WORKER_CAPACITY/);
  });
});
