#!/usr/bin/env node
// A stand-in for an MCP-driven coding agent, for demos: instead of importing the agent SDK
// it talks to `handoff-agent mcp` (started from the run's PATH) through the official MCP
// client, the way an MCP-capable agent uses the tools. Each step: `checkpoint` (halts while
// paused; after a takeover, `wait_for_handback` says what the operator did), then
// `read_messages`. DEMO_AGENT_STEPS (default 5) and DEMO_AGENT_STEP_MS (default 2000) shorten
// it; DEMO_AGENT_REQUEST_OPERATOR_AT=<step> calls `request_operator` at that step.
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';

const total = Math.max(1, Number(process.env.DEMO_AGENT_STEPS) || 5);
const stepMs = Number(process.env.DEMO_AGENT_STEP_MS) || 2000;
const requestAt = Number(process.env.DEMO_AGENT_REQUEST_OPERATOR_AT) || null;

const client = new Client({ name: 'handoff-demo-mcp-agent', version: '0.1.0' });
// The run's environment (HANDOFF_*) is inherited by the server: it finds the run's files.
await client.connect(new StdioClientTransport({ command: 'handoff-agent', args: ['mcp'], env: process.env }));
const tool = async (name, args = {}) => (await client.callTool({ name, arguments: args }, undefined, { timeout: 3_600_000, resetTimeoutOnProgress: true })).structuredContent;

console.log(`demo MCP agent · tools: ${(await client.listTools()).tools.map((t) => t.name).join(', ')}`);
for (let step = 1; step <= total; step += 1) {
  const cp = await tool('checkpoint');
  if (cp.wasTakenOver) {
    const { handback } = await tool('wait_for_handback', { timeout_seconds: 5 });
    if (handback) console.log(`↩ ${handback.actor} handed back: ${handback.summary} (ran ${handback.context.commands?.length ?? 0} command(s), left the shell in ${handback.context.cwd})`);
  }
  for (const m of (await tool('read_messages')).messages) console.log(`✉ ${m.from}: ${m.message}`);
  if (step === requestAt) await tool('request_operator', { reason: `demo: stuck at step ${step}` });
  console.log(`step ${step}/${total}`);
  await sleep(stepMs);
}
await client.close();
console.log('done');
