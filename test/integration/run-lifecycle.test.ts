import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Frame } from '@handoff/shared';
import { em } from '../../server/src/infra/db/orm.js';
import { api, emitAck, joinFrames, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { pidsMatching, untilNoProcess } from '../support/processes.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

/** What a viewer saw of a run's terminal: scrollback from the subscribe ack + live frames, by seq. */
async function watchTerminal(viewer: Viewer, runId: string, afterSeq?: number) {
  const ack = await emitAck<{ frames: Frame[] }>(viewer.socket, 'term:subscribe', afterSeq === undefined ? { runId } : { runId, afterSeq });
  if (!ack.ok) throw new Error(ack.error.message);
  const scrollback = ack.data.frames;
  return {
    scrollback,
    /** scrollback ∪ live, each seq once (the overlap is expected and deduplicated). */
    frames(): Frame[] {
      const bySeq = new Map<number, Frame>();
      for (const f of [...scrollback, ...(viewer.live.get(runId) ?? [])]) bySeq.set(f.seq, f);
      return [...bySeq.values()];
    },
  };
}

// The pane turns "\n" into "\r\n" (the tty's onlcr); compare what the program printed.
const printed = (frames: Frame[]) => joinFrames(frames).replace(/\r\n/g, '\n');

describe('run lifecycle: real hub + real worker process + real tmux', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let operator: string;
  let viewer: Viewer;

  beforeAll(async () => {
    hub = await startTestHub();
    operator = await hub.token('operator');
    viewer = await Viewer.connect(hub.url, await hub.token('observer'));
  });
  afterAll(async () => {
    viewer?.close();
    await worker?.stop();
    await hub?.stop();
  });

  it('runs a queued run once a worker connects; the viewer sees exactly what it printed; exit code recorded', async () => {
    const expected = ['alpha', 'β-unicode ✓', ...Array.from({ length: 60 }, (_, i) => `line ${i + 1}`)].join('\n') + '\n';
    const script = `printf 'alpha\\n'; printf '\\316\\262-unicode \\342\\234\\223\\n'; for i in $(seq 1 60); do echo "line $i"; done; exit 3`;
    // Queued while no worker is connected.
    const created = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script }, title: 'print and fail' });
    expect(created.status).toBe(201);
    const runId = created.body.id as string;
    const term = await watchTerminal(viewer, runId);
    await new Promise((r) => setTimeout(r, 300));
    expect((await api(hub.url, operator, 'GET', `/api/task-runs/${runId}`)).body.status).toBe('queued');

    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken('lifecycle-worker') });
    const done = await viewer.untilStatus(runId, ['succeeded', 'failed']);
    expect(done.status).toBe('failed');
    expect(done.exitCode).toBe(3);
    await viewer.until('all output', () => printed(term.frames()) === expected, 10_000).catch(() => undefined);
    expect(printed(term.frames())).toBe(expected);

    const shown = (await api(hub.url, operator, 'GET', `/api/task-runs/${runId}`)).body;
    expect(shown).toMatchObject({ status: 'failed', exitCode: 3, workerId: expect.any(String) });
    expect(shown.startedAt).not.toBeNull();
    expect(shown.sessions).toHaveLength(1);
    expect(shown.sessions[0]).toMatchObject({ provider: 'web', status: 'ENDED', endReason: 'run-ended' });
    expect(shown.sessions[0].readyAt).not.toBeNull();

    const actions = (await em(hub.orm).execute<{ action: string }[]>('select action from audit_events where run_id = ? order by seq', [runId])).map((r) => r.action);
    expect(actions).toEqual(['run.create', 'run.assign', 'run.start', 'session.create', 'session.ready', 'run.exit', 'session.end']);

    // The recording holds the same bytes (what a late viewer or an export would get).
    const recorded = await hub.terminal.scrollback(runId, 0);
    expect(printed(recorded.frames)).toBe(expected);
  });

  it('cancel stops the whole process tree; nothing is left in tmux or on disk', async () => {
    const marker = `handoff-cancel-${randomBytes(4).toString('hex')}`;
    // A background child and a foreground one, both carrying the marker in their argv.
    const script = `sh -c 'sleep 600; : ${marker}' & sh -c 'sleep 601; : ${marker}' & echo ready; wait`;
    const created = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script } });
    const runId = created.body.id as string;
    const term = await watchTerminal(viewer, runId);
    await viewer.untilStatus(runId, ['running']);
    await viewer.until('ready printed', () => printed(term.frames()).includes('ready'));
    expect(pidsMatching(marker).length).toBeGreaterThanOrEqual(2);

    const cancelled = await api(hub.url, operator, 'POST', `/api/task-runs/${runId}/cancel`, { reason: 'test' });
    expect(cancelled.status).toBe(200);
    expect(cancelled.body.status).toBe('cancelled');
    expect(await untilNoProcess(marker)).toEqual([]);
    await viewer.until('exit code recorded', () => viewer.runs.get(runId)?.exitCode != null);
    // The run directory (tmux socket, output) is removed and its tmux server is gone.
    await viewer.until('run dir removed', () => !readdirSync(worker.runDir).includes(runId) || undefined, 10_000);
    expect(await untilNoProcess(`${worker.runDir}/${runId}`)).toEqual([]);
    expect((await api(hub.url, operator, 'GET', `/api/task-runs/${runId}`)).body.sessions[0].status).toBe('ENDED');
  });

  it('a late joiner gets the scrollback then live frames: together exactly the full output', async () => {
    const n = 40;
    const expected = Array.from({ length: n }, (_, i) => `tick ${i + 1}`).join('\n') + '\n';
    const created = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: `for i in $(seq 1 ${n}); do echo "tick $i"; sleep 0.05; done` } });
    const runId = created.body.id as string;
    const early = await watchTerminal(viewer, runId);
    await viewer.until('tick 10', () => printed(early.frames()).includes('tick 10\n'));

    const late = await Viewer.connect(hub.url, await hub.token('observer'));
    try {
      const lateTerm = await watchTerminal(late, runId);
      expect(lateTerm.scrollback.length).toBeGreaterThan(0); // joined mid-run: it got history
      expect(printed(lateTerm.scrollback)).toContain('tick 10\n');
      await viewer.untilStatus(runId, ['succeeded']);
      await late.until('late viewer has everything', () => printed(lateTerm.frames()) === expected, 10_000).catch(() => undefined);
      expect(printed(lateTerm.frames())).toBe(expected);
      expect((late.live.get(runId) ?? []).length).toBeGreaterThan(0); // and live frames followed
    } finally {
      late.close();
    }
  });

  it('a worker whose connection the hub drops reconnects; frames continue without loss or duplicate', async () => {
    const n = 60;
    const expected = Array.from({ length: n }, (_, i) => `row ${i + 1}`).join('\n') + '\n';
    const created = await api(hub.url, operator, 'POST', '/api/task-runs', { command: { script: `for i in $(seq 1 ${n}); do echo "row $i"; sleep 0.05; done` } });
    const runId = created.body.id as string;
    const term = await watchTerminal(viewer, runId);
    await viewer.until('row 15', () => printed(term.frames()).includes('row 15\n'));

    // Kill the hub's side of the worker's connection (its transport), as a network cut would.
    const before = (await hub.io.of('/worker').fetchSockets()).length;
    expect(before).toBe(1);
    for (const s of hub.io.of('/worker').sockets.values()) s.conn.close();

    await viewer.untilStatus(runId, ['succeeded'], 30_000);
    await viewer.until('viewer has everything', () => printed(term.frames()) === expected, 10_000).catch(() => undefined);
    expect(printed(term.frames())).toBe(expected);
    const recorded = await hub.terminal.scrollback(runId, 0);
    expect(recorded.frames.map((f) => f.seq)).toEqual(recorded.frames.map((_, i) => i + 1));
    expect(printed(recorded.frames)).toBe(expected);
    expect(worker.output()).toMatch(/disconnect/i);
  });
});
