import type { AuditEvent } from '@handoff/shared';
import { describe, expect, it } from 'vitest';
import { filterGroups, groupByCorrelation, groupTitle, metadataPairs, NO_FILTER } from './timeline.js';

let seq = 0;
const row = (correlationId: string, action: string, extra: Partial<AuditEvent> = {}): AuditEvent => ({
  id: `id-${++seq}`, runId: 'r', seq, sessionId: null, correlationId, actorType: 'operator', actorId: 'u1', action, result: 'ok',
  at: new Date(Date.UTC(2026, 11, 2, 8, 0, seq)).toISOString(), metadata: {}, prevHash: null, hash: `h${seq}`, ...extra,
});
const names = (e: AuditEvent) => (e.actorId === 'u1' ? 'alice' : 'worker-1');

describe('timeline grouping and filters', () => {
  const rows = [
    row('a', 'run.create'),
    row('b', 'control.takeover'),
    row('b', 'rw.grant'),
    row('c', 'message.send', { metadata: { chars: 5 } }),
    row('b', 'control.applied', { actorType: 'worker', actorId: 'w1' }),
    row('b', 'control.handback', { metadata: { summary: 'all good' } }),
    row('d', 'term.input', { result: 'denied' }),
  ];

  it('puts a takeover and its hand-back in one story, in chain order, ordered by first row', () => {
    const groups = groupByCorrelation(rows);
    expect(groups.map((g) => g.correlationId)).toEqual(['a', 'b', 'c', 'd']);
    expect(groups[1]!.events.map((e) => e.action)).toEqual(['control.takeover', 'rw.grant', 'control.applied', 'control.handback']);
    expect(groupTitle(groups[1]!)).toBe('Takeover → hand-back');
    expect(groups[3]!.result).toBe('denied');
    expect(groups[1]!.from < groups[1]!.to).toBe(true);
  });

  it('filters rows by type, actor and text, dropping groups left empty', () => {
    const groups = groupByCorrelation(rows);
    expect(filterGroups(groups, NO_FILTER, names)).toBe(groups);
    const control = filterGroups(groups, { ...NO_FILTER, type: 'control' }, names);
    expect(control.map((g) => g.correlationId)).toEqual(['b']);
    expect(control[0]!.events.map((e) => e.action)).toEqual(['control.takeover', 'control.applied', 'control.handback']);
    expect(filterGroups(groups, { ...NO_FILTER, actor: 'worker-1' }, names).flatMap((g) => g.events.map((e) => e.action))).toEqual(['control.applied']);
    expect(filterGroups(groups, { ...NO_FILTER, text: 'ALL GOOD' }, names).flatMap((g) => g.events.map((e) => e.action))).toEqual(['control.handback']);
    expect(filterGroups(groups, { ...NO_FILTER, text: 'nothing like it' }, names)).toEqual([]);
  });

  it('marks values hidden from observers and shortens long ones', () => {
    const pairs = metadataPairs({ summary: '[REDACTED:observer]', n: 3, long: 'x'.repeat(500), empty: null });
    expect(pairs.map((p) => p.key)).toEqual(['summary', 'n', 'long']);
    expect(pairs[0]!.hidden).toBe(true);
    expect(pairs[1]).toMatchObject({ value: '3', hidden: false });
    expect(pairs[2]!.value).toHaveLength(240);
  });
});
