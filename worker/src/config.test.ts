import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from './config.js';

const required = { HANDOFF_URL: 'http://127.0.0.1:3000', HANDOFF_WORKER_TOKEN: 'wkr_0123456789abcdef' };

describe('loadConfig', () => {
  it('applies the documented defaults and resolves the run directory', () => {
    const config = loadConfig(required);
    expect(config).toMatchObject({ WORKER_CAPACITY: 2, WORKER_COLS: 120, WORKER_ROWS: 32, FRAME_FLUSH_MS: 16, LOG_LEVEL: 'info' });
    // Per OS user and per worker identity: another token gets another directory.
    expect(config.WORKER_RUN_DIR).toMatch(new RegExp(`^${join(tmpdir(), `handoff-worker-${process.getuid!()}`)}/[0-9a-f]{16}$`));
    expect(loadConfig({ ...required, HANDOFF_WORKER_TOKEN: 'wkr_another-token-0000' }).WORKER_RUN_DIR).not.toBe(config.WORKER_RUN_DIR);
    expect(config.hubUrls).toEqual(['http://127.0.0.1:3000']);
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('takes several hub URLs, comma separated', () => {
    const config = loadConfig({ ...required, HANDOFF_URL: 'http://10.0.0.1:3000/, http://10.0.0.2:3000' });
    expect(config.hubUrls).toEqual(['http://10.0.0.1:3000', 'http://10.0.0.2:3000']);
    expect(() => loadConfig({ ...required, HANDOFF_URL: 'http://10.0.0.1:3000,nope' })).toThrow(/HANDOFF_URL: must be a URL or a comma-separated list of URLs/);
  });

  it('refuses a bad environment with a message naming every bad variable', () => {
    expect(() => loadConfig({ HANDOFF_URL: 'not a url', WORKER_CAPACITY: '0' })).toThrow(/HANDOFF_URL[\s\S]*HANDOFF_WORKER_TOKEN[\s\S]*WORKER_CAPACITY/);
  });
});
