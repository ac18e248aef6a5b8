import { FINISHED_RUN_STATUSES, type Run } from '@handoff/shared';

/** The one action the run page offers as its primary button. */
export type PrimaryAction = 'pause' | 'resume' | 'handback' | 'replay';

/**
 * What makes sense now: pause a running agent, resume a paused one, hand back a takeover
 * you hold, replay a finished run. Nothing when the viewer cannot act (an observer, someone
 * else's takeover, a queued run): an impossible action is never the primary button.
 */
export function primaryAction(run: Run, me: string | null, canOperate: boolean): PrimaryAction | null {
  if (FINISHED_RUN_STATUSES.includes(run.status)) return 'replay';
  if (!canOperate || run.status !== 'running') return null;
  switch (run.control.state) {
    case 'agent':
      return 'pause';
    case 'paused':
      return 'resume';
    case 'operator':
      return me !== null && run.control.controllerId === me ? 'handback' : null;
  }
}

/**
 * How a finished run ended, in words: a cancelled run was stopped on purpose (its 143 is
 * SIGTERM's exit code, not a crash); only a failure is an error.
 */
export function exitTone(run: Run): 'ok' | 'bad' | 'neutral' {
  if (run.exitCode === null) return 'neutral';
  if (run.status === 'cancelled' || run.status === 'lost') return 'neutral';
  return run.exitCode === 0 ? 'ok' : 'bad';
}
