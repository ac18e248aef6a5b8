// The audit chain's hot queries — the previous row of an append (`where run_id = ? order by
// seq desc limit 1`), pages and verification (`where run_id = ? and seq > ? order by seq`) —
// could not use the expression index of 0001 and scanned the whole table on every append.
// A plain (run_id, seq) btree serves them all, the global chain (`run_id is null`) included.
export const name = '0005-audit-run-seq-index';

export const up: string[] = [`create index control_events_run_seq_idx on control_events (run_id, seq)`];
