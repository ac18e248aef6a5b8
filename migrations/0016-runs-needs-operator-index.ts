// The dashboard puts runs whose agent asked for an operator first: it reads them on their
// own (`GET /api/task-runs?needsOperator=true`) on every list load. Without an index that
// walk reads the whole runs table to find the few flagged ones; this partial index holds only
// them, newest first, so the read is as cheap as the handful of rows it returns.
export const name = '0016-runs-needs-operator-index';

export const up: string[] = [`create index runs_needs_operator_idx on runs (created_at desc, id desc) where needs_operator_at is not null`];
