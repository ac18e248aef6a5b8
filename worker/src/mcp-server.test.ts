import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { writeControlFile } from './run-control.js';
import { AGENT_CLI } from './run-script.js';

/** `handoff-agent mcp` over stdio against a run directory the test plays the worker for. */
describe('handoff-agent mcp', () => {
  const cleanup: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0)) await c();
  });

  async function serve(env: Record<string, string>) {
    const client = new Client({ name: 'mcp-unit', version: '1' });
    await client.connect(new StdioClientTransport({ command: process.execPath, args: [AGENT_CLI, 'mcp'], env: { PATH: process.env.PATH ?? '', ...env }, stderr: 'ignore' }));
    cleanup.push(() => client.close());
    return async (name: string, args: Record<string, unknown> = {}) => {
      const res = await client.callTool({ name, arguments: args });
      return { ...(res.structuredContent as Record<string, any>), isError: Boolean(res.isError), text: (res.content as Array<{ text: string }>)[0]!.text } as Record<string, any>;
    };
  }
  function runDir() {
    const dir = mkdtempSync(join(tmpdir(), 'handoff-mcp-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    appendFileSync(join(dir, 'inbox.jsonl'), '');
    return { dir, env: { HANDOFF_CONTROL: join(dir, 'control.json'), HANDOFF_INBOX: join(dir, 'inbox.jsonl'), HANDOFF_OUTBOX: join(dir, 'outbox.jsonl'), HANDOFF_RUN_ID: 'run-1' } };
  }
  const packet = (summary: string) => ({ type: 'handoff', ts: new Date().toISOString(), actor: 'Ada', actorId: 'u1', summary, correlationId: null, context: { cwd: '/srv', env: {}, scrollbackSeq: 7, commands: [{ command: 'make', exitStatus: 2, startOffset: 0, endOffset: 10 }], recording: '/api/task-runs/run-1/recording.cast' } });

  it('checkpoint blocks while paused (marking the pause soft) and returns when control is back; times out with paused: true', async () => {
    const { dir, env } = runDir();
    const call = await serve(env);
    writeControlFile(dir, { seq: 1, state: 'paused', mode: 'soft', by: { id: 'u1', name: 'Ada' } });
    expect(await call('status')).toMatchObject({ paused: true, takenOver: false, controlledBy: 'Ada', haltedAtCheckpoint: false });
    expect(await call('checkpoint', { timeout_seconds: 1 })).toMatchObject({ paused: true, state: 'paused', by: 'Ada' });
    expect(JSON.parse(readFileSync(join(dir, 'checkpoint.json'), 'utf8'))).toMatchObject({ seq: 1 });
    const waiting = call('checkpoint', { timeout_seconds: 30 });
    await new Promise((r) => setTimeout(r, 300));
    writeControlFile(dir, { seq: 2, state: 'agent', mode: null });
    expect(await waiting).toMatchObject({ paused: false, waitedSeconds: expect.any(Number), wasTakenOver: false });
    expect(await call('checkpoint')).toMatchObject({ paused: false });
  });

  it('wait_for_handback: blocks during a takeover and returns the packet once; a takeover ending without one returns null', async () => {
    const { dir, env } = runDir();
    const call = await serve(env);
    writeControlFile(dir, { seq: 1, state: 'operator', mode: 'soft', by: { id: 'u1', name: 'Ada' } });
    const waiting = call('wait_for_handback', { timeout_seconds: 30 });
    await new Promise((r) => setTimeout(r, 300));
    // As the worker does it: the packet first, then control back.
    appendFileSync(env.HANDOFF_INBOX, `${JSON.stringify({ ts: 't', actor: 'Ada', message: 'hi' })}\n${JSON.stringify(packet('fixed the build'))}\n`);
    writeControlFile(dir, { seq: 2, state: 'agent', mode: null });
    const got = await waiting;
    expect(got.handback).toMatchObject({ summary: 'fixed the build', actor: 'Ada', context: { cwd: '/srv', commands: [{ command: 'make', exitStatus: 2 }] } });
    expect(await call('wait_for_handback')).toMatchObject({ handback: null, takenOver: false });
    expect(await call('read_messages')).toMatchObject({ messages: [{ ts: 't', from: 'Ada', message: 'hi' }], note: expect.stringContaining('wait_for_handback') });

    writeControlFile(dir, { seq: 3, state: 'operator', mode: 'hard', by: { id: 'u2', name: 'Bob' } });
    expect(await call('wait_for_handback', { timeout_seconds: 1 })).toMatchObject({ handback: null, takenOver: true, by: 'Bob' });
    const again = call('wait_for_handback', { timeout_seconds: 30 });
    await new Promise((r) => setTimeout(r, 300));
    writeControlFile(dir, { seq: 4, state: 'paused', mode: 'hard', by: { id: 'u2', name: 'Bob' } });
    expect(await again).toMatchObject({ handback: null, takenOver: false, state: 'paused' });
  });

  it('request_operator appends to the outbox; outside a run every tool says so and does nothing', async () => {
    const { env } = runDir();
    const call = await serve(env);
    expect(await call('request_operator', { reason: 'need prod creds' })).toMatchObject({ requested: true });
    expect(JSON.parse(readFileSync(env.HANDOFF_OUTBOX, 'utf8'))).toMatchObject({ type: 'request-operator', reason: 'need prod creds' });
    expect((await call('request_operator', { reason: '   ' })).isError).toBe(true);

    const outside = await serve({});
    expect(await outside('status')).toMatchObject({ insideRun: false, paused: false });
    expect(await outside('checkpoint')).toMatchObject({ paused: false, insideRun: false });
    const refused = await outside('request_operator', { reason: 'x' });
    expect(refused.isError).toBe(true);
    expect(refused.text).toContain('Not inside a Handoff run');
  });
});
