import { describe, expect, it } from 'vitest';
import { parsePassEnv, runEnvironment } from './run-env.js';

describe('run environment', () => {
  const worker = {
    PATH: '/usr/bin', HOME: '/home/w', LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8', TERM: 'xterm',
    DATABASE_URL: 'postgres://hub:secret@db/handoff', REDIS_URL: 'redis://r', HANDOFF_DATA_DIR: '/srv/handoff',
    HANDOFF_WORKER_TOKEN: 'wkr_secret', HANDOFF_URL: 'http://hub', AWS_SECRET_ACCESS_KEY: 'x', CI_JOB: '1', CI_TOKEN: '2',
  };

  it('keeps only the allowlist from the worker, then the run’s own env on top', () => {
    expect(runEnvironment(worker, { FOO: 'bar', PATH: '/opt/bin' })).toEqual({
      PATH: '/opt/bin', HOME: '/home/w', LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8', TERM: 'xterm', FOO: 'bar',
    });
  });

  it('passes the names in WORKER_PASS_ENV (and PREFIX_*), never the worker’s own token or hub URL', () => {
    const pass = parsePassEnv(' CI_* , DATABASE_URL,HANDOFF_WORKER_TOKEN,HANDOFF_URL');
    const env = runEnvironment(worker, {}, pass);
    expect(env).toMatchObject({ CI_JOB: '1', CI_TOKEN: '2', DATABASE_URL: worker.DATABASE_URL });
    expect(env).not.toHaveProperty('HANDOFF_WORKER_TOKEN');
    expect(env).not.toHaveProperty('HANDOFF_URL');
    expect(env).not.toHaveProperty('REDIS_URL');
    expect(env).not.toHaveProperty('AWS_SECRET_ACCESS_KEY');
  });
});
