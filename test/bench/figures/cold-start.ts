import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createTestDatabase } from '../../support/db.js';
import { repeat, type BenchContext, type Figure } from '../lib/figure.js';
import { freePort, startHubProcess } from '../lib/hub-process.js';
import type { FigureResult } from '../lib/report.js';

const BARE_HTTP = fileURLToPath(new URL('../clients/bare-http.ts', import.meta.url));

/** Spawn → first 200 from a bare Node HTTP server started the same way (node --import tsx). */
async function bareStartMs(): Promise<number> {
  const port = await freePort();
  const t0 = performance.now();
  const proc = spawn(process.execPath, ['--import', 'tsx', BARE_HTTP], { env: { ...process.env, PORT: String(port) }, stdio: 'ignore' });
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  try {
    for (const deadline = Date.now() + 30_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 10))) {
      if (await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.status === 200, () => false)) return performance.now() - t0;
    }
    throw new Error('bare HTTP server did not answer in 30 s');
  } finally {
    proc.kill('SIGTERM');
    await exited;
  }
}

/** Cold start: spawn the hub process on a fresh PostgreSQL database (migrations included) → first `/healthz` 200. */
export const coldStart: Figure = {
  name: 'cold-start',
  async run(ctx: BenchContext): Promise<FigureResult> {
    const results = await repeat(ctx, 'cold-start', async () => {
      const floor = await bareStartMs();
      const db = await createTestDatabase();
      try {
        const hub = await startHubProcess({ databaseUrl: db.url });
        await hub.stop();
        return { hub: hub.startMs, floor };
      } finally {
        await db.drop();
      }
    });
    return {
      name: 'cold-start',
      title: 'cold start → `/healthz`',
      floor: 'the same spawn (`node --import tsx`) of a bare Node HTTP server answering /healthz',
      repeats: ctx.repeats,
      stats: [{ label: 'spawn → /healthz 200', unit: 'ms', handoff: results.map((r) => r.hub), floor: results.map((r) => r.floor) }],
      notes: ['`node --import tsx server/src/main.ts` with PORT, DATABASE_URL (a fresh, empty PostgreSQL database: every migration runs) and HANDOFF_DATA_DIR, polled every 10 ms. No goal in the issue; the figure is there to catch regressions.'],
    };
  },
};
