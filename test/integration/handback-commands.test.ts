import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Socket } from 'socket.io-client';
import type { Run } from '@handoff/shared';
import { em } from '../../server/src/infra/db/orm.js';
import { api, connect, emitAck, eventually, joinFrames, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

/** Real hub, worker, tmux and operator shell (bash): the commands typed during a takeover come back in the hand-back packet. */
describe('hand-back packet lists the operator’s commands', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let alice: string;
  let observer: Viewer;
  let aliceSocket: Socket;

  beforeAll(async () => {
    hub = await startTestHub({ env: { SWEEP_INTERVAL: '100ms', PAUSE_SOFT_GRACE: '3s' } });
    alice = await hub.token('operator');
    observer = await Viewer.connect(hub.url, await hub.token('observer'));
    aliceSocket = await connect(hub.url, '/dashboard', alice);
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`cmds-${randomBytes(3).toString('hex')}`) });
  });
  afterAll(async () => {
    aliceSocket?.close();
    observer?.close();
    await worker?.stop();
    await hub?.stop();
  });

  it('three commands typed through term:input (one failing): listed in order with their exit statuses and output offsets, secrets redacted', async () => {
    const created = await api(hub.url, alice, 'POST', '/api/task-runs', { command: { script: 'while true; do handoff-agent checkpoint; sleep 0.2; done' } });
    const runId = created.body.id as string;
    await emitAck(observer.socket, 'run:subscribe', { runId });
    await emitAck(observer.socket, 'term:subscribe', { runId });
    await observer.untilStatus(runId, ['running']);
    await observer.until('web session READY', () => observer.runs.get(runId)?.sessions.some((s) => s.provider === 'web' && s.status === 'READY'));
    const output = () => joinFrames([...new Map((observer.live.get(runId) ?? []).map((f) => [f.seq, f])).values()]);

    expect((await api(hub.url, alice, 'POST', `/api/task-runs/${runId}/control`, { action: 'takeover', ttlMinutes: 5 })).status).toBe(200);
    await observer.until('takeover applied', () => (observer.runs.get(runId)?.control.appliedSeq ?? 0) >= 1);

    const m = randomBytes(3).toString('hex');
    const secret = `ghp_${randomBytes(18).toString('hex')}`;
    const typed = [`echo first-${m}`, `ls /nonexistent-${m}`, `export GITHUB_TOKEN=${secret}; echo third-${m}`];
    // Typed like a person does: each line at a prompt (keys typed ahead would be echoed by
    // the tty wherever they arrive, outside the command's range).
    const prompts = () => (output().match(/ operator /g) ?? []).length;
    await observer.until('the operator shell prompts', () => prompts() >= 1);
    for (const line of typed) {
      const before = prompts();
      expect(await emitAck(aliceSocket, 'term:input', { runId, data: `${line}\r` })).toMatchObject({ ok: true });
      // The next prompt: bash recorded the command before printing it.
      await observer.until(`prompt after ${line}`, () => prompts() > before);
    }
    expect(output()).toMatch(new RegExp(`[\r\n]third-${m}\r\n`));

    const back = await api(hub.url, alice, 'POST', `/api/task-runs/${runId}/control`, { action: 'handback', summary: 'checked the box' });
    expect(back.status).toBe(200);
    await observer.until('hand-back applied', () => (observer.runs.get(runId) as Run | undefined)?.control.appliedSeq === 2);

    const dir = path.join(worker.runDir, runId);
    const packets = readFileSync(path.join(dir, 'inbox.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((e) => e.type === 'handoff');
    expect(packets).toHaveLength(1);
    const commands = packets[0].context.commands as Array<{ command: string; exitStatus: number; startOffset: number; endOffset: number }>;
    expect(commands.map((c) => [c.command, c.exitStatus])).toEqual([
      [`echo first-${m}`, 0],
      [`ls /nonexistent-${m}`, 2],
      [expect.stringMatching(new RegExp(`^export GITHUB_TOKEN=\\[REDACTED:[a-z-]+\\]; echo third-${m}$`)), 0],
    ]);
    expect(JSON.stringify(packets[0])).not.toContain(secret);

    // The offsets are in the run's captured output: each range holds its command's output, in order.
    const log = readFileSync(path.join(dir, 'output.log'));
    const slice = (c: (typeof commands)[number]) => log.subarray(c.startOffset, c.endOffset).toString('utf8');
    for (let i = 1; i < commands.length; i += 1) expect(commands[i]!.startOffset).toBeGreaterThanOrEqual(commands[i - 1]!.endOffset);
    // The typed line and the command's output: the marker twice.
    expect(slice(commands[0]!).split(`first-${m}`)).toHaveLength(3);
    expect(slice(commands[1]!)).toMatch(/No such file or directory/);
    expect(slice(commands[2]!).split(`third-${m}`)).toHaveLength(3);

    // The hub recorded the same list with the hand-back (audit metadata goes through the shared schema).
    const completed = await eventually('handoff.completed audited', async () => (await em(hub.orm).execute<{ metadata: { commands?: Array<{ command: string; exitStatus: number }> } }[]>(
      "select metadata from audit_events where run_id = ? and action = 'handoff.completed'", [runId]))[0]);
    expect(completed.metadata.commands!.map((c) => c.exitStatus)).toEqual([0, 2, 0]);
    expect(JSON.stringify(completed.metadata)).not.toContain(secret);

    await api(hub.url, alice, 'POST', `/api/task-runs/${runId}/cancel`, {});
    await observer.untilStatus(runId, ['cancelled']);
  });
});
