#!/usr/bin/env node
// `handoff-agent`: the agent SDK from a shell, for agents that are scripts or not written
// in JavaScript. Plain Node (20+), no dependencies — except `mcp`, which loads the MCP SDK
// (a dependency of the worker package) on demand. Inside a run the worker puts it on PATH.
import { checkpoint, onInbox, requestOperator } from './index.mjs';

const USAGE = `usage: handoff-agent <command>

  checkpoint                  return at once while the agent may run; while the run is
                              paused, halt here (the pause is then soft) until resumed
  inbox [--follow] [--json]   print the run's operator messages and hand-back packets
                              (--follow: and wait for new ones; --json: one JSON line
                              each, as in the inbox)
  request-operator <reason>   ask for a human: the run is flagged on every dashboard
  mcp                         serve the above as Model Context Protocol tools over
                              stdio (checkpoint, request_operator, read_messages,
                              wait_for_handback, status), for MCP-capable agents

exit status: 0 done, 1 failed, 2 bad usage or not inside a Handoff run
`;

const out = (text) => process.stdout.write(text);
const fail = (code, text) => {
  process.stderr.write(`handoff-agent: ${text}\n`);
  process.exit(code);
};
// `handoff-agent inbox | head` closes our stdout early: that is not an error.
process.stdout.on('error', (err) => process.exit(err.code === 'EPIPE' ? 0 : 1));

/**
 * A hand-back packet for a human reading the inbox: who handed back and their summary
 * (continuation lines indented), then where they left the terminal.
 */
function handoffText(packet) {
  const summary = String(packet.summary ?? '').replace(/\n/g, '\n    ');
  const context = packet.context ?? {};
  const vars = Object.keys(context.env ?? {}).length;
  const where = [
    `cwd ${context.cwd ?? '(unknown)'}`,
    `${vars} env var${vars === 1 ? '' : 's'} (--json shows them, secrets redacted)`,
    ...(context.commands ?? []).map((c) => `ran \`${c.command}\` → exit ${c.exitStatus}`),
    `scrollback up to frame ${context.scrollbackSeq ?? '?'} of ${context.recording ?? 'the recording'}`,
  ];
  return `${packet.ts ?? '?'} ${packet.actor ?? 'an operator'} handed control back: ${summary}\n    ${where.join('; ')}\n`;
}

const [command, ...args] = process.argv.slice(2);

switch (command) {
  case 'checkpoint': {
    if (args.length > 0) fail(2, `checkpoint takes no arguments\n\n${USAGE}`);
    await checkpoint();
    break;
  }
  case 'inbox': {
    const unknown = args.filter((a) => a !== '--follow' && a !== '-f' && a !== '--json');
    if (unknown.length > 0) fail(2, `unknown option ${unknown[0]}\n\n${USAGE}`);
    if (!process.env.HANDOFF_INBOX) fail(2, 'HANDOFF_INBOX is not set: not inside a Handoff run');
    const follow = args.includes('--follow') || args.includes('-f');
    const json = args.includes('--json');
    const print = (entry) => {
      if (entry.type === 'handoff') out(json ? `${JSON.stringify(entry)}\n` : handoffText(entry));
      else out(json ? `${JSON.stringify({ ts: entry.ts, actor: entry.actor, message: entry.message })}\n` : `${entry.ts} ${entry.actor}: ${entry.message}\n`);
    };
    // The entries already there arrive before onInbox returns; --follow keeps the
    // process alive for the next ones (until it is interrupted).
    const stop = onInbox(print, { keepAlive: follow });
    if (!follow) stop();
    break;
  }
  case 'request-operator': {
    const reason = args.join(' ').trim();
    if (reason === '') fail(2, `request-operator needs a reason\n\n${USAGE}`);
    if (!(await requestOperator(reason))) fail(2, 'HANDOFF_OUTBOX is not set: not inside a Handoff run');
    break;
  }
  case 'mcp': {
    if (args.length > 0) fail(2, `mcp takes no arguments\n\n${USAGE}`);
    // Imported only here: the MCP SDK is the one dependency of the CLI, and no other command needs it.
    const { runMcpServer } = await import('./mcp-server.mjs');
    await runMcpServer();
    break;
  }
  case 'help':
  case '--help':
  case '-h':
    out(USAGE);
    break;
  case undefined:
    fail(2, `a command is needed\n\n${USAGE}`);
    break;
  default:
    fail(2, `unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
}
