import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { cpuByGroup, cpuSnapshot, machineBusyMs } from './cpu.js';

/**
 * A shell whose subshell burns CPU, exits (reaped by the shell), then prints `burnt` and sleeps:
 * the CPU of a process that is gone must land in its parent's group.
 */
function burner(): { pid: number; burnt: Promise<void>; stop(): void } {
  const sh = spawn('sh', ['-c', '(i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done); echo burnt; exec sleep 30'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const burnt = (async () => {
    let out = '';
    for await (const chunk of sh.stdout) if ((out += String(chunk)).includes('burnt')) return;
    throw new Error('the burner exited before it burnt');
  })();
  return { pid: sh.pid!, burnt, stop: () => void sh.kill('SIGKILL') };
}

describe('bench CPU profile (/proc)', () => {
  it("counts a process's CPU in its group, a reaped child's in its parent's, and nothing for an idle one", async () => {
    const idle = spawn('sleep', ['30']);
    await once(idle, 'spawn');
    // Exec'd before the first snapshot (a forked child not yet exec'd still shows as `node`).
    while (readFileSync(`/proc/${idle.pid}/comm`, 'utf8').trim() !== 'sleep') await new Promise((r) => setTimeout(r, 5));
    const b = burner();
    try {
      const before = cpuSnapshot();
      const busy0 = machineBusyMs();
      const t0 = performance.now();
      await b.burnt;
      const wall = performance.now() - t0;
      const after = cpuSnapshot();
      const cpu = cpuByGroup(before, after, (pid) => {
        if (pid === b.pid) return 'burner';
        if (pid === idle.pid) return 'idle';
        // The burner's subshell is gone by now: nothing of it may be counted on its own.
        if (after.get(pid)?.ppid === b.pid) return 'orphan';
        return null;
      });
      const burnt = cpu.get('burner') ?? 0;
      // The subshell's loop costs ~300 ms of CPU here whatever else the machine does (CPU time,
      // not wall time); counted only through the shell's reaped children. One process cannot
      // use more CPU than the wall time it had (give or take a 10 ms tick at each end).
      expect(burnt).toBeGreaterThan(100);
      expect(burnt).toBeLessThanOrEqual(wall + 20);
      expect(cpu.has('idle')).toBe(false);
      expect(cpu.has('orphan')).toBe(false);
      // The machine was at least as busy as the burner.
      expect(machineBusyMs() - busy0).toBeGreaterThanOrEqual(burnt - 20);
    } finally {
      b.stop();
      idle.kill('SIGKILL');
    }
  });
});
