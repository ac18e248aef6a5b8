// `audit_append` returns exactly one row, but a set-returning function is planned at 1,000 rows
// by default. A statement with two appends (a run's web share and its `session.create` and
// `session.ready` rows) was planned at a million rows, which crossed `jit_above_cost`: the JIT
// compiled it for ~200 ms on every run start, for a statement that runs in under 3 ms.
export const name = '0019-audit-append-rows';

export const up: string[] = [
  `alter function audit_append(uuid, uuid, uuid, uuid, varchar, varchar, varchar, varchar, timestamptz, jsonb, text, text) rows 1`,
];
