import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '@handoff/shared';
import { ABANDON_FILE, LEASE_FILE, LOCK_FILE, LeaseKeeper, defaultRunDir, lockRunDir, writeAbandonAfter } from './run-dir.js';

const dirs: string[] = [];
const freshDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'handoff-rundir-'));
  dirs.push(d);
  return join(d, 'runs');
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('run dir', () => {
  it('is per OS user and per worker identity, and never contains the token', () => {
    const a = defaultRunDir('wkr_secret-token-a', 1000, '/tmp');
    expect(a).toMatch(/^\/tmp\/handoff-worker-1000\/[0-9a-f]{16}$/);
    expect(a).not.toContain('secret');
    expect(defaultRunDir('wkr_secret-token-a', 1000, '/tmp')).toBe(a);
    expect(defaultRunDir('wkr_secret-token-b', 1000, '/tmp')).not.toBe(a);
  });

  it('is locked by one live worker: a second one is refused with a clear message; release frees it', () => {
    const dir = freshDir();
    const lock = lockRunDir(dir);
    expect(JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')).pid).toBe(process.pid);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    // Another live process holds it (this test process, as seen by a "worker" with another pid).
    expect(() => lockRunDir(dir, process.pid + 1_000_000)).toThrow(/another worker \(pid \d+\) is using the run directory/);
    lock.release();
    const again = lockRunDir(dir);
    again.release();
  });

  it('takes over the lock of a worker that died, and of a pid reused by another process', async () => {
    const dir = freshDir();
    lockRunDir(dir);
    // A dead holder: a process that has exited.
    const child = spawn('true');
    await new Promise((r) => child.once('exit', r));
    writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: child.pid, startTime: '1' }));
    const taken = lockRunDir(dir);
    expect(JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')).pid).toBe(process.pid);
    taken.release();
    // A live pid with another start time: the pid was reused, the lock is stale.
    writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: process.ppid, startTime: 'not-its-start-time' }));
    lockRunDir(dir, process.pid).release();
    // Garbage in the lock file (a crash mid-write) is stale too.
    writeFileSync(join(dir, LOCK_FILE), '{"pid":');
    lockRunDir(dir).release();
  });

  it('touches the lease on its clock’s time every interval; once stopped the lease ages past the abandon threshold', () => {
    const dir = freshDir();
    lockRunDir(dir);
    const clock = new ManualClock(Date.parse('2026-01-01T00:00:00Z'));
    const lease = new LeaseKeeper(dir, { intervalMs: 1000, clock });
    const mtime = () => statSync(join(dir, LEASE_FILE)).mtimeMs;
    lease.start();
    expect(mtime()).toBe(clock.now());
    clock.advance(999);
    expect(mtime()).toBe(clock.now() - 999); // not due yet
    clock.advance(1);
    expect(mtime()).toBe(clock.now());
    clock.advance(60_000);
    expect(mtime()).toBe(clock.now()); // a live worker's lease is never older than one interval

    writeAbandonAfter(dir, 4321.4);
    expect(readFileSync(join(dir, ABANDON_FILE), 'utf8')).toBe('4321');
    lease.stop();
    expect(clock.pending).toBe(0);
    const lastTouch = clock.now();
    clock.advance(4321);
    expect(mtime()).toBe(lastTouch);
    // What each run's watchdog compares (run-watchdog.ts): past the threshold, the run is abandoned.
    clock.advance(1);
    expect(clock.now() - mtime()).toBeGreaterThan(Number(readFileSync(join(dir, ABANDON_FILE), 'utf8')));
  });
});
