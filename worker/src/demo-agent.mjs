#!/usr/bin/env node
// A stand-in for an AI agent, for demos and tests: a banner, then a few steps with fake
// progress, reading operator messages from $HANDOFF_INBOX before each step. Plain Node
// (20+), no dependencies, so a worker can run it as `node worker/src/demo-agent.mjs`.
// DEMO_AGENT_STEPS (default 8) and DEMO_AGENT_STEP_MS (default: 1500–3000 random)
// shorten it for tests.
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

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
const inbox = process.env.HANDOFF_INBOX;
const color = (code, text) => `\x1b[${code}m${text}\x1b[0m`;

let seenLines = 0;
/** Prints operator messages appended to the inbox since the last look. */
function readInbox() {
  if (!inbox) return;
  let lines;
  try {
    lines = readFileSync(inbox, 'utf8').split('\n');
  } catch {
    return; // no inbox yet
  }
  // The last element is either '' or a line still being written: read it next time.
  const complete = lines.slice(0, -1);
  for (const line of complete.slice(seenLines)) {
    try {
      const { ts, actor, message } = JSON.parse(line);
      process.stdout.write(`${color('1;35', `✉ message from ${actor ?? 'operator'}`)} ${color('2', ts ?? '')}\n  ${message}\n`);
    } catch {
      process.stdout.write(`${color('33', '(unreadable inbox line)')}\n`);
    }
  }
  seenLines = complete.length;
}

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

for (let step = 1; step <= total; step += 1) {
  readInbox();
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
readInbox();
process.stdout.write(`\n${color('1;32', 'done:')} all ${total} steps finished\n`);
