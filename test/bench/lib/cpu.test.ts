import { spawn } from 'node:child_process';
import { once } from 'node:events';
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
    const b = burner();
    try {
      const before = cpuSnapshot();
      const busy0 = machineBusyMs();
      const t0 = performance.now();
      await b.burnt;
      const wall = performance.now() - t0;
      const cpu = cpuByGroup(before, cpuSnapshot(), (pid, comm, ancestors) => {
        if (pid === b.pid) return 'burner';
        if (pid === idle.pid) return 'idle';
        // The burner's subshell is gone by now: nothing of it may be counted on its own.
        if (comm === 'sh' && ancestors[0] === 'sh') return 'orphan';
        return null;
      });
      const burnt = cpu.get('burner') ?? 0;
      // The subshell ran flat out for the whole wait (give or take a tick at each end).
      expect(burnt).toBeGreaterThan(wall * 0.5);
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
