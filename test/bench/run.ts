// `pnpm bench [--quick] [figure…]`: every figure beside its floor, measured in the same run.
// Full runs rewrite docs/benchmarks.md; quick runs write docs/benchmarks-quick.md.
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { figures } from './figures/index.js';
import { cpuSnapshot } from './lib/cpu.js';
import type { BenchContext } from './lib/figure.js';
import { ClusterPool } from './lib/hubs.js';
import { machine, markdownReport, textTable, type FigureResult } from './lib/report.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
process.chdir(repoRoot); // test/support resolves web/dist and worker/ from the repo root
// The in-process hubs keep their log lines in memory: warnings only, so logging is not what is measured.
process.env.TEST_HUB_LOG ??= 'warn';
process.env.TEST_WORKER_LOG ??= 'warn';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const wanted = args.filter((a) => !a.startsWith('--'));
const unknown = wanted.filter((w) => !figures.some((f) => f.name === w));
if (unknown.length) {
  console.error(`unknown figure(s): ${unknown.join(', ')}\nfigures: ${figures.map((f) => f.name).join(', ')}`);
  process.exit(2);
}
const selected = wanted.length ? figures.filter((f) => wanted.includes(f.name)) : figures;

const clusters = new ClusterPool();
const ctx: BenchContext = {
  quick,
  repeats: quick ? 1 : 3,
  log: (m) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${m}`),
  cluster: (nodes) => clusters.get(nodes),
};

// However the runner ends, no process it started outlives it: what is still running (a hub
// process, scripted workers, clients; a worker then stops its runs' tmux servers) gets SIGTERM.
const stopChildren = () => {
  for (const [pid, p] of cpuSnapshot()) {
    if (p.ppid !== process.pid) continue;
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // gone meanwhile
    }
  }
};
process.on('exit', stopChildren);
// An error nothing caught (a figure's stray socket or pool) ends the run and its children with it
// (Node runs no 'exit' listener after an uncaught exception unless it is handled here).
process.on('uncaughtException', (err) => {
  ctx.log(`crashed: ${err.stack ?? err.message}`);
  process.exit(1); // 'exit' stops the children
});
// Ctrl-C: stop the hubs and the worker (its tmux servers) before leaving.
process.once('SIGINT', () => {
  ctx.log('interrupted: stopping the clusters');
  void clusters.stopAll().finally(() => process.exit(130));
});

const m = machine();
const startedAt = new Date();
const results: FigureResult[] = [];
const failures: string[] = [];
for (const fig of selected) {
  ctx.log(`${fig.name}: start`);
  const t = performance.now();
  try {
    results.push(await fig.run(ctx));
    ctx.log(`${fig.name}: done in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    failures.push(`${fig.name}: ${message}`);
    ctx.log(`${fig.name}: FAILED: ${err instanceof Error ? (err.stack ?? message) : message}`);
  }
}
await clusters.stopAll();
m.loadAfter = loadavg();

const command = `pnpm bench${quick ? ' --quick' : ''}${wanted.length ? ` ${wanted.join(' ')}` : ''}`;
const doc = markdownReport({ figs: results, machine: m, quick, startedAt, durationMs: Date.now() - startedAt.getTime(), command, failures });
// A subset run prints only: the doc always holds a whole suite of one mode.
if (!wanted.length) {
  const file = path.join(repoRoot, 'docs', quick ? 'benchmarks-quick.md' : 'benchmarks.md');
  writeFileSync(file, doc);
  ctx.log(`wrote ${path.relative(repoRoot, file)}`);
}
console.log(`\n${textTable(results)}\n\n${m.cpu}, ${m.cores} cores, ${m.memoryGiB.toFixed(1)} GiB, Node ${m.node}; load ${m.loadBefore.map((x) => x.toFixed(2)).join(' ')} → ${m.loadAfter.map((x) => x.toFixed(2)).join(' ')}`);
if (failures.length) console.log(`\nFailed: ${failures.join('; ')}`);
// Sockets, pools and timers of the stopped hubs must not keep the runner alive.
process.exit(failures.length ? 1 : 0);
