import type { Socket } from 'socket.io-client';
import { api, connect, emitAck } from '../../support/clients.js';
import { serveClient } from '../lib/child.js';

export interface ViewersCutParams {
  /** One URL per node; `perUrl` viewers on each. */
  urls: string[];
  perUrl: number;
  /** Hub: a dashboard token (viewers `term:subscribe`); bare server: null (viewers `join` the room). */
  token: string | null;
  runId: string;
  /** Hub: the client itself revokes the run's web share through this node on `go`. */
  revokeVia?: string;
}
export interface ViewersCutResult {
  /** Epoch ms of the revoke call (hub) — null for the bare server, whose runner times its own broadcast. */
  t0: number | null;
  /** Epoch ms at which each viewer got `term:closed`. */
  cuts: number[];
  /** Viewers that were never cut within 10 s. */
  missing: number;
}

const nowEpochMs = () => performance.timeOrigin + performance.now();

// Viewers of one run's terminal spread over hub nodes; on `go`, revoke and time until every one was cut.
serveClient<ViewersCutParams, ViewersCutResult>(async (p, ctx) => {
  const sockets: Socket[] = [];
  try {
    const cuts: number[] = [];
    const total = p.urls.length * p.perUrl;
    let allCut: () => void = () => undefined;
    const done = new Promise<void>((resolve) => (allCut = resolve));
    for (const url of p.urls) {
      for (let i = 0; i < p.perUrl; i++) {
        const s = await connect(url, p.token ? '/dashboard' : '/', p.token ?? undefined);
        sockets.push(s);
        s.once('term:closed', () => {
          cuts.push(nowEpochMs());
          if (cuts.length === total) allCut();
        });
        const ack = p.token ? await emitAck(s, 'term:subscribe', { runId: p.runId }) : await emitAck(s, 'join', p.runId);
        if (!ack.ok) throw new Error(`subscribe: ${ack.error.message}`);
      }
    }
    ctx.event('ready');
    await ctx.message();
    let t0: number | null = null;
    if (p.revokeVia) {
      t0 = nowEpochMs();
      const res = await api(p.revokeVia, p.token, 'POST', `/api/task-runs/${p.runId}/live-session/revoke`, { reason: 'bench' });
      if (res.status !== 200) throw new Error(`revoke answered ${res.status}: ${JSON.stringify(res.body)}`);
    }
    await Promise.race([done, new Promise((resolve) => setTimeout(resolve, 10_000))]);
    return { t0, cuts, missing: total - cuts.length };
  } finally {
    for (const s of sockets) s.close();
  }
});
