// The audit timeline links each row to the recording frame current at its time ("jump to
// replay"): a lookup by (run, t) must descend an index, not scan a long run's frames.
export const name = '0015-recording-time-index';

export const up: string[] = [`create index recording_chunks_run_t_idx on recording_chunks (run_id, t, seq)`];
