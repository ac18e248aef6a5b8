#!/usr/bin/env node
// A stand-in for an AI agent, for demos and tests: a banner, then a few steps with fake
// progress. It uses the agent SDK like a real agent would: a checkpoint before each step
// (a soft pause or a takeover halts it there), operator messages and hand-backs printed as
// they arrive, and — only when
// DEMO_AGENT_REQUEST_OPERATOR_AT=<step> is set — a request for an operator at that step.
// Plain Node (20+), no dependencies, so a worker can run it as `node worker/src/demo-agent.mjs`.
// DEMO_AGENT_STEPS (default 8) and DEMO_AGENT_STEP_MS (default: 1500–3000 random)
// shorten it for tests.
import { setTimeout as sleep } from 'node:timers/promises';
import { checkpoint, onHandoff, onMessage, requestOperator } from '../agent-sdk/index.mjs';

const STEPS = [
  'reading the task description',
  'exploring the repository',
  'planning the change',
  'editing source files',
  'running tests',
  'fixing a failing test',
  'running tests again',
  'writing the summary',
];
const total = Math.max(1, Number(process.env.DEMO_AGENT_STEPS) || STEPS.length);
const fixedStepMs = Number(process.env.DEMO_AGENT_STEP_MS);
const requestAt = Number(process.env.DEMO_AGENT_REQUEST_OPERATOR_AT) || null;
const inbox = process.env.HANDOFF_INBOX;
const color = (code, text) => `\x1b[${code}m${text}\x1b[0m`;

async function progress(ms) {
  const width = 24;
  const ticks = 12;
  for (let i = 1; i <= ticks; i += 1) {
    await sleep(ms / ticks);
    const done = Math.round((width * i) / ticks);
    process.stdout.write(`\r  [${'#'.repeat(done)}${'.'.repeat(width - done)}] ${Math.round((100 * i) / ticks)}%`);
  }
  process.stdout.write('\n');
}

const title = '  demo agent · pretending to be an AI  ';
process.stdout.write(
  `${color('1;36', `╭${'─'.repeat(title.length)}╮`)}\n` +
    `${color('1;36', `│${title}│`)}\n` +
    `${color('1;36', `╰${'─'.repeat(title.length)}╯`)}\n` +
    `run ${process.env.HANDOFF_RUN_ID ?? '(no run id)'} · inbox ${inbox ?? '(none)'}\n\n`,
);

// Messages print as they arrive, even mid-step: they never pause the agent.
const stopMessages = onMessage(({ ts, actor, message }) => {
  process.stdout.write(`${color('1;35', `✉ message from ${actor ?? 'operator'}`)} ${color('2', ts ?? '')}\n  ${message}\n`);
});

// After a takeover: what the operator says they did, and where they left the terminal.
const stopHandoffs = onHandoff(({ actor, summary, context }) => {
  process.stdout.write(`${color('1;34', `↩ handed back by ${actor ?? 'an operator'}`)}: ${summary ?? ''}\n  (their shell was in ${context?.cwd ?? 'an unknown directory'}; terminal up to frame ${context?.scrollbackSeq ?? '?'})\n`);
});

for (let step = 1; step <= total; step += 1) {
  await checkpoint(); // a soft pause halts the agent here, between steps
  if (step === requestAt && (await requestOperator(`demo: stuck at step ${step}`))) {
    process.stdout.write(`${color('1;33', '⚑ asked for an operator')} (demo: stuck at step ${step})\n`);
  }
  const what = STEPS[(step - 1) % STEPS.length];
  process.stdout.write(`${color('1', `step ${step}/${total}:`)} ${what}…\n`);
  const ms = Number.isFinite(fixedStepMs) && fixedStepMs >= 0 ? fixedStepMs : 1500 + Math.random() * 1500;
  if (what.startsWith('running tests')) {
    for (const t of ['parses config', 'streams output', 'reports exit']) {
      await sleep(ms / 4);
      process.stdout.write(`  ${color('32', '✓')} ${t}\n`);
    }
    await progress(ms / 4);
  } else {
    await progress(ms);
  }
}
stopMessages();
stopHandoffs();
process.stdout.write(`\n${color('1;32', 'done:')} all ${total} steps finished\n`);
