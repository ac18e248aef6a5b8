import { type AuditEvent, OBSERVER_REDACTED } from '@handoff/shared';

// The audit timeline's pure parts: grouping rows into stories, filtering, and wording.

/** One correlation id's rows: a command and its consequences (a takeover and its hand-back share one). */
export interface TimelineGroup {
  correlationId: string;
  events: AuditEvent[];
  /** When the story started and last moved (ISO). */
  from: string;
  to: string;
  /** Worst result in the story: error > denied > pending > ok. */
  result: string;
}

const RESULT_RANK: Record<string, number> = { ok: 0, pending: 1, denied: 2, error: 3 };

/** Groups rows (in chain order) by correlation id; groups are ordered by their first row. */
export function groupByCorrelation(events: AuditEvent[]): TimelineGroup[] {
  const groups = new Map<string, TimelineGroup>();
  for (const e of events) {
    let g = groups.get(e.correlationId);
    if (!g) groups.set(e.correlationId, (g = { correlationId: e.correlationId, events: [], from: e.at, to: e.at, result: 'ok' }));
    g.events.push(e);
    g.to = e.at;
    if ((RESULT_RANK[e.result] ?? 0) > (RESULT_RANK[g.result] ?? 0)) g.result = e.result;
  }
  return [...groups.values()];
}

/** The family of an action, for the type filter: `control.takeover` → `control`. */
export function actionType(action: string): string {
  return action.split('.')[0] ?? action;
}

export interface TimelineFilter {
  /** An action family (`control`, `rw`, `session`…), or '' for all. */
  type: string;
  /** An actor's display name, or '' for all. */
  actor: string;
  /** Case-insensitive text searched in the action, the actor's name, the result and the metadata. */
  text: string;
}

export const NO_FILTER: TimelineFilter = { type: '', actor: '', text: '' };

export function matches(e: AuditEvent, f: TimelineFilter, actorName: (e: AuditEvent) => string): boolean {
  if (f.type && actionType(e.action) !== f.type) return false;
  if (f.actor && actorName(e) !== f.actor) return false;
  const text = f.text.trim().toLowerCase();
  if (!text) return true;
  return [e.action, actorName(e), e.result, JSON.stringify(e.metadata)].some((s) => s.toLowerCase().includes(text));
}

/** The groups that keep at least one matching row, each with only its matching rows. */
export function filterGroups(groups: TimelineGroup[], f: TimelineFilter, actorName: (e: AuditEvent) => string): TimelineGroup[] {
  if (!f.type && !f.actor && !f.text.trim()) return groups;
  const out: TimelineGroup[] = [];
  for (const g of groups) {
    const events = g.events.filter((e) => matches(e, f, actorName));
    if (events.length) out.push({ ...g, events });
  }
  return out;
}

/** Plain-language titles of the actions a timeline shows most. */
const TITLES: Record<string, string> = {
  'run.create': 'Run created',
  'run.assign': 'Assigned to a worker',
  'run.start': 'Started',
  'run.exit': 'Exited',
  'run.cancel': 'Cancelled',
  'run.lost': 'Lost',
  'run.needs-operator': 'Agent asked for an operator',
  'run.needs-operator.dismiss': 'Operator request dismissed',
  'control.pause': 'Paused',
  'control.resume': 'Resumed',
  'control.takeover': 'Took over',
  'control.handback': 'Handed back',
  'control.applied': 'Worker applied control',
  'handoff.initiated': 'Handoff started',
  'handoff.completed': 'Handoff delivered to the agent',
  'rw.grant': 'Write access granted',
  'rw.revoke': 'Write access ended',
  'rw.reveal': 'Write link revealed',
  'session.create': 'Share started',
  'session.reuse': 'Share reused',
  'session.revoke': 'Share revoked',
  'session.extend': 'Share extended',
  'session.grace': 'Share expiry warning',
  'message.send': 'Message sent',
  'term.input': 'Keystrokes',
};

export function actionTitle(action: string): string {
  return TITLES[action] ?? action;
}

/** A story's title: its first command (what the operator did), in plain words. */
export function groupTitle(g: TimelineGroup): string {
  const first = g.events[0];
  if (!first) return '';
  const hasHandback = g.events.some((e) => e.action === 'control.handback');
  if (first.action === 'control.takeover') return hasHandback ? 'Takeover → hand-back' : 'Takeover (in progress)';
  return actionTitle(first.action);
}

/** Metadata as short `key: value` pairs (values JSON unless plain strings or numbers), for display. */
export function metadataPairs(metadata: Record<string, unknown>): Array<{ key: string; value: string; hidden: boolean }> {
  return Object.entries(metadata)
    .filter(([, v]) => v !== null && v !== undefined && v !== '')
    .map(([key, v]) => {
      const value = typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : JSON.stringify(v);
      return { key, value: value.length > 240 ? `${value.slice(0, 239)}…` : value, hidden: v === OBSERVER_REDACTED };
    });
}

/** Rows as the JSON-lines export writes them: one row per line. */
export function toJsonl(events: AuditEvent[]): string {
  return events.map((e) => JSON.stringify(e)).join('\n') + (events.length ? '\n' : '');
}
