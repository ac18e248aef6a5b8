import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Socket } from 'socket.io-client';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import type { Run } from '@handoff/shared';
import { api, connect, emitAck, eventually, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

/**
 * `handoff-agent mcp` inside a real run (real hub, worker, tmux), driven by the MCP SDK's
 * own client over stdio. The server is the run's own CLI (`<run dir>/bin/handoff-agent`,
 * the wrapper the worker writes) started with the run's HANDOFF_* variables, as an
 * MCP-capable agent inside the run would start it.
 */
describe('handoff-agent mcp: an MCP client inside a real run reaches operators', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let alice: string;
  let observer: Viewer;
  let aliceSocket: Socket;
  let client: Client | null = null;

  beforeAll(async () => {
    hub = await startTestHub({ env: { SWEEP_INTERVAL: '100ms', PAUSE_SOFT_GRACE: '3s' } });
    alice = await hub.token('operator');
    observer = await Viewer.connect(hub.url, await hub.token('observer'));
    aliceSocket = await connect(hub.url, '/dashboard', alice);
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`mcp-${randomBytes(3).toString('hex')}`) });
  });
  afterAll(async () => {
    await client?.close();
    aliceSocket?.close();
    observer?.close();
    await worker?.stop();
    await hub?.stop();
  });

  /** Calls a tool and returns its structured result (failing the test on a tool error). */
  const call = async (name: string, args: Record<string, unknown> = {}, timeout = 60_000) => {
    const res = await client!.callTool({ name, arguments: args }, undefined, { timeout });
    expect(res.isError ?? false, JSON.stringify(res.content)).toBe(false);
    return res.structuredContent as Record<string, any>;
  };

  it('request_operator flags the run, read_messages returns a REST message, wait_for_handback returns the packet of a takeover handed back through the API', async () => {
    // The agent stand-in only checkpoints, so a takeover halts it softly.
    const created = await api(hub.url, alice, 'POST', '/api/task-runs', { command: { script: 'while true; do handoff-agent checkpoint; sleep 0.2; done' } });
    expect(created.status).toBe(201);
    const runId = created.body.id as string;
    await emitAck(observer.socket, 'run:subscribe', { runId });
    await observer.untilStatus(runId, ['running']);
    await observer.until('web session READY', () => observer.runs.get(runId)?.sessions.some((s) => s.provider === 'web' && s.status === 'READY'));

    const dir = path.join(worker.runDir, runId);
    client = new Client({ name: 'handoff-mcp-test', version: '1.0.0' });
    await client.connect(
      new StdioClientTransport({
        command: path.join(dir, 'bin', 'handoff-agent'),
        args: ['mcp'],
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HANDOFF_RUN_ID: runId, HANDOFF_INBOX: path.join(dir, 'inbox.jsonl'), HANDOFF_OUTBOX: path.join(dir, 'outbox.jsonl'), HANDOFF_CONTROL: path.join(dir, 'control.json') },
        stderr: 'pipe',
      }),
    );
    const tools = (await client.listTools()).tools;
    expect(tools.map((t) => t.name).sort()).toEqual(['checkpoint', 'read_messages', 'request_operator', 'status', 'wait_for_handback']);
    for (const t of tools) expect(t.description!.length, t.name).toBeGreaterThan(150);

    expect(await call('status')).toMatchObject({ insideRun: true, runId, paused: false, takenOver: false, controlledBy: null, liveSession: { known: false, timeLeftSeconds: null } });
    expect(await call('checkpoint')).toEqual({ paused: false });

    // request_operator → needs-operator on the hub.
    const reason = `mcp: cannot reach the staging DB ${randomBytes(3).toString('hex')}`;
    expect(await call('request_operator', { reason })).toMatchObject({ requested: true });
    await eventually('needs-operator on the hub', async () => ((await api(hub.url, alice, 'GET', `/api/task-runs/${runId}`)).body as Run).needsOperator?.reason === reason);

    // read_messages: an operator message posted over REST, once.
    expect(await call('read_messages')).toEqual({ messages: [] });
    const text = `try the replica at db-2 ${randomBytes(3).toString('hex')}`;
    expect((await api(hub.url, alice, 'POST', `/api/task-runs/${runId}/operator-messages`, { message: text })).status).toBe(201);
    const got = await eventually('the message through read_messages', async () => {
      const { messages } = await call('read_messages');
      return messages.length > 0 ? messages : undefined;
    });
    expect(got).toEqual([{ ts: expect.any(String), from: expect.stringMatching(/^operator-/), message: text }]);
    expect(await call('read_messages')).toEqual({ messages: [] });

    // Nobody has taken over: wait_for_handback answers at once.
    expect(await call('wait_for_handback')).toMatchObject({ handback: null, takenOver: false });

    // Takeover through the API: status names the operator; wait_for_handback blocks until the hand-back.
    const taken = await api(hub.url, alice, 'POST', `/api/task-runs/${runId}/control`, { action: 'takeover', ttlMinutes: 5 });
    expect(taken.status).toBe(200);
    const operatorName = (taken.body as Run).control.by!.name;
    await observer.until('takeover applied', () => (observer.runs.get(runId)?.control.appliedSeq ?? 0) >= 1);
    expect(await call('status')).toMatchObject({ paused: true, takenOver: true, controlledBy: operatorName, haltedAtCheckpoint: true });
    let settled = false;
    const waiting = call('wait_for_handback', { timeout_seconds: 60 }).finally(() => (settled = true));
    // The operator works in their shell meanwhile: the wait does not return on its own.
    expect(await emitAck(aliceSocket, 'term:subscribe', { runId })).toMatchObject({ ok: true });
    expect(await emitAck(aliceSocket, 'term:input', { runId, data: 'cd /tmp\r' })).toMatchObject({ ok: true });
    await new Promise((r) => setTimeout(r, 1000));
    expect(settled).toBe(false);

    const summary = 'Pointed the app at db-2; migrations pass now.';
    expect((await api(hub.url, alice, 'POST', `/api/task-runs/${runId}/control`, { action: 'handback', summary })).status).toBe(200);
    const { handback } = await waiting;
    expect(handback).toMatchObject({ type: 'handoff', actor: operatorName, summary, context: { cwd: '/tmp', scrollbackSeq: expect.any(Number), recording: `/api/task-runs/${runId}/recording.cast` } });
    // Returned once; control is the agent's again.
    expect(await call('wait_for_handback')).toMatchObject({ handback: null, takenOver: false });
    expect(await call('status')).toMatchObject({ paused: false, controlledBy: null });
    expect(await call('checkpoint')).toEqual({ paused: false });

    await client.close();
    client = null;
    await api(hub.url, alice, 'POST', `/api/task-runs/${runId}/cancel`, {});
    await observer.untilStatus(runId, ['cancelled']);
  });
});
