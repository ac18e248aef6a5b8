import type { BenchCluster } from './hubs.js';
import type { FigureResult } from './report.js';

export interface BenchContext {
  /** `--quick`: one repeat and smaller n, for before/after checks in under 2 minutes. */
  quick: boolean;
  /** Repeats of each figure (3 full, 1 quick). */
  repeats: number;
  log(message: string): void;
  /** The run's shared cluster of 1 or 2 hub nodes (one PostgreSQL database, Redis adapter for 2), a worker on the last node. */
  cluster(nodes: 1 | 2): Promise<BenchCluster>;
}

/** One figure of the suite: measures Handoff and its floor in the same run. */
export interface Figure {
  /** Short name, used on the command line (`pnpm bench control-push`). */
  name: string;
  run(ctx: BenchContext): Promise<FigureResult>;
}

/** Runs `fn` `ctx.repeats` times (in order, never concurrently) and collects what each returns. */
export async function repeat<T>(ctx: BenchContext, name: string, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < ctx.repeats; i++) {
    ctx.log(`${name}: repeat ${i + 1}/${ctx.repeats}`);
    out.push(await fn(i));
  }
  return out;
}
