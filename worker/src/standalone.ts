// Entry of the single-file worker (dist/handoff-worker.mjs, built by scripts/build-worker.mjs):
// `node handoff-worker.mjs` runs the worker; `node handoff-worker.mjs agent <command>` is the
// `handoff-agent` CLI, which the worker writes into every run's bin/ (see run-script.ts).
// Both are in the one file, so a machine needs only Node ≥ 20, tmux and this file.
if (process.argv[2] === 'agent') {
  process.argv.splice(2, 1); // the CLI reads its command from argv[2]
  await import('../agent-sdk/handoff-agent.mjs');
} else {
  await import('./main.js');
}
