import type { Run, WriteGrant } from '@handoff/shared';
import { describe, expect, it } from 'vitest';
import { formatClock } from './format.js';
import { RunDetail } from './run-detail.svelte.js';
import { WriteAccess } from './write-access.svelte.js';

const RUN_ID = '01900000-0000-7000-8000-000000000001';
const ME = 'user-me';
const T0 = Date.parse('2026-01-01T10:00:00Z');
const at = (ms: number) => new Date(T0 + ms).toISOString();

function grant(id: string, over: Partial<WriteGrant> = {}): WriteGrant {
  return {
    id,
    revision: 1,
    runId: RUN_ID,
    sessionId: 's1',
    granteeId: ME,
    granteeName: 'me',
    status: 'active',
    createdAt: at(0),
    expiresAt: at(15 * 60_000),
    endedAt: null,
    endReason: null,
    correlationId: 'c1',
    ...over,
  };
}

function run(writeGrants: WriteGrant[], revision = 1): Run {
  return {
    id: RUN_ID,
    revision,
    title: 't',
    command: { script: 'true' },
    cwd: null,
    env: {},
    labels: {},
    status: 'running',
    createdBy: 'u',
    createdByName: 'ursula',
    workerId: 'w',
    workerName: 'worker-1',
    exitCode: null,
    errorMessage: null,
    control: { state: 'operator', seq: 1, appliedSeq: 1, mode: null, controllerId: ME, by: { id: ME, name: 'me' } },
    writeGrants,
    needsOperator: null,
    liveSessionEnabled: true,
    createdAt: at(0),
    assignedAt: at(0),
    startedAt: at(0),
    endedAt: null,
    sessions: [],
  };
}

function setup(grants: WriteGrant[]) {
  const detail = new RunDetail(RUN_ID);
  detail.accept(run(grants));
  return { detail, access: new WriteAccess(detail, () => ME) };
}

describe('WriteAccess', () => {
  it('my live grant is mine until it is pushed as ended; the reason reads as a person would say it', () => {
    const { detail, access } = setup([grant('g1'), grant('g2', { granteeId: 'other', granteeName: 'bob' })]);
    expect(access.mine(T0)?.id).toBe('g1');
    expect(access.live(T0).map((g) => g.id)).toEqual(['g1', 'g2']);
    expect(access.ended(T0)).toBeNull();

    detail.applyGrant(grant('g1', { revision: 2, status: 'revoked', endReason: 'handback', endedAt: at(1000) }));
    expect(access.mine(T0)).toBeNull();
    expect(access.ended(T0)).toEqual({ grantId: 'g1', reason: 'handed back' });
    expect(detail.run?.writeGrants.map((g) => g.id)).toEqual(['g2']);
  });

  it('a stale snapshot never revives an ended grant', () => {
    const { detail, access } = setup([grant('g1')]);
    detail.applyGrant(grant('g1', { revision: 2, status: 'revoked', endReason: 'revoked' }));
    // A newer run snapshot whose grants were read before the revoke: the grant stays ended.
    detail.accept(run([grant('g1')], 2));
    expect(access.mine(T0)).toBeNull();
    expect(detail.run?.writeGrants).toEqual([]);
    expect(access.ended(T0)?.reason).toBe('revoked');
  });

  it('a run snapshot without my grant ends it; the push that follows gives the reason', () => {
    const { detail, access } = setup([grant('g1')]);
    detail.accept(run([], 2));
    expect(access.mine(T0)).toBeNull();
    expect(access.ended(T0)?.reason).toBe('ended');
    detail.applyGrant(grant('g1', { revision: 2, status: 'expired', endReason: 'ttl' }));
    expect(access.ended(T0)?.reason).toBe('expired');
  });

  it('the countdown reaching zero ends the grant on screen before the hub says so', () => {
    const { access } = setup([grant('g1', { expiresAt: at(60_000) })]);
    expect(access.mine(T0 + 59_999)?.id).toBe('g1');
    expect(formatClock(at(60_000), T0 + 59_001)).toBe('0:01');
    expect(access.mine(T0 + 60_000)).toBeNull();
    expect(access.ended(T0 + 60_000)?.reason).toBe('expired');
  });

  it('a pushed new grant (takeover answered elsewhere) becomes mine; a dismissed end notice stays hidden', () => {
    const { detail, access } = setup([]);
    expect(access.ended(T0)).toBeNull(); // never had one
    detail.applyGrant(grant('g1'));
    expect(access.mine(T0)?.id).toBe('g1');
    detail.applyGrant(grant('g1', { revision: 2, status: 'revoked', endReason: 'revoked' }));
    access.dismissEnded('g1');
    expect(access.ended(T0)).toBeNull();
  });
});

describe('formatClock', () => {
  it('shows minutes:seconds, hours when long, rounding up and never negative', () => {
    expect(formatClock(at(15 * 60_000), T0)).toBe('15:00');
    expect(formatClock(at(754_000), T0 + 500)).toBe('12:34');
    expect(formatClock(at(3_723_000), T0)).toBe('1:02:03');
    expect(formatClock(at(0), T0 + 5000)).toBe('0:00');
  });
});
