// `handoff-agent mcp`: the agent SDK as a Model Context Protocol server over stdio, for
// agents driven through MCP tools (coding agents) rather than code that imports the SDK.
// Unlike the rest of the SDK this module has dependencies (the official
// `@modelcontextprotocol/sdk` and zod, both dependencies of the worker package): the CLI
// imports it lazily, only for `mcp`, so the other commands stay dependency-free.
// stdout belongs to the protocol: nothing else may ever be written there.
import { readFileSync, watch } from 'node:fs';
import { dirname, join } from 'node:path';
import { CHECKPOINT_FILE, checkpoint, controlState, requestOperator } from './index.mjs';

/** How often a blocking tool reports progress (which keeps a client's request timeout from firing), in ms. */
const PROGRESS_EVERY_MS = 10_000;
/** Default and largest wait of a blocking tool, in seconds. */
const DEFAULT_WAIT_S = 300;
const MAX_WAIT_S = 3600;

const SERVER_INSTRUCTIONS = `You are running inside a Handoff run: human operators can watch your terminal live, pause you, take over the terminal, send you messages, and hand control back with a summary of what they did.
- Call \`checkpoint\` between steps (before running a command, after finishing one): it returns at once unless an operator paused you, and then blocks until you may go on.
- Call \`read_messages\` regularly (e.g. after each checkpoint): operators' messages are instructions or context for you.
- Call \`request_operator\` when you are stuck or about to do something risky that a human should decide.
- After a takeover, \`wait_for_handback\` tells you what the operator did (summary, the commands they ran, where they left the shell).
- \`status\` says whether you are paused and by whom.`;

/** Reads the inbox's complete lines from byte `from`: the entries and the offset after the last complete line. */
function readInbox(path, from) {
  let data;
  try {
    data = readFileSync(path);
  } catch {
    return { entries: [], next: from };
  }
  if (data.length < from) from = 0; // replaced or truncated: start over
  const entries = [];
  let offset = from;
  for (let nl = data.indexOf(0x0a, offset); nl !== -1; nl = data.indexOf(0x0a, offset)) {
    const line = data.subarray(offset, nl).toString('utf8');
    offset = nl + 1;
    try {
      const entry = JSON.parse(line);
      if (entry && typeof entry === 'object') entries.push(entry);
    } catch {
      // not a line the worker wrote
    }
  }
  return { entries, next: offset };
}

function readCheckpointMarker(controlPath) {
  try {
    const marker = JSON.parse(readFileSync(join(dirname(controlPath), CHECKPOINT_FILE), 'utf8'));
    return typeof marker?.seq === 'number' ? marker : null;
  } catch {
    return null;
  }
}

/**
 * Resolves when `check()` returns a value other than undefined (re-checked on every change
 * in `dir`, no polling), or with `onTimeout()` after `ms`; rejects when `signal` aborts.
 */
function waitInDir(dir, check, { ms, signal, onTimeout }) {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (fn, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      watcher.close();
      signal?.removeEventListener('abort', onAbort);
      fn(value);
    };
    const evaluate = () => {
      if (done) return;
      try {
        const value = check();
        if (value !== undefined) finish(resolve, value);
      } catch (err) {
        finish(reject, err);
      }
    };
    const onAbort = () => finish(reject, signal.reason ?? new Error('cancelled'));
    // Watch first, then check: a change in between is not missed.
    const watcher = watch(dir, () => evaluate());
    watcher.on('error', (err) => finish(reject, err));
    const timer = setTimeout(() => finish(resolve, onTimeout()), ms);
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    evaluate();
  });
}

/** Sends MCP progress notifications while `promise` is pending, if the client asked for them (a progress token). */
async function withProgress(extra, message, promise) {
  const token = extra?._meta?.progressToken;
  if (token === undefined) return promise;
  let progress = 0;
  const timer = setInterval(() => {
    progress += 1;
    extra.sendNotification({ method: 'notifications/progress', params: { progressToken: token, progress, message } }).catch(() => undefined);
  }, PROGRESS_EVERY_MS);
  try {
    return await promise;
  } finally {
    clearInterval(timer);
  }
}

const result = (value) => ({ content: [{ type: 'text', text: JSON.stringify(value, null, 2) }], structuredContent: value });
const failure = (text) => ({ content: [{ type: 'text', text }], isError: true });

/**
 * Builds the MCP server (not connected). `env` defaults to `process.env`: HANDOFF_CONTROL,
 * HANDOFF_INBOX, HANDOFF_OUTBOX and HANDOFF_RUN_ID of the run.
 */
export async function createMcpServer({ env = process.env, version = '0.1.0' } = {}) {
  const [{ McpServer }, { z }] = await Promise.all([import('@modelcontextprotocol/sdk/server/mcp.js'), import('zod')]);
  const controlPath = env.HANDOFF_CONTROL || null;
  const inboxPath = env.HANDOFF_INBOX || null;
  const outboxPath = env.HANDOFF_OUTBOX || null;
  const runId = env.HANDOFF_RUN_ID || null;
  const insideRun = Boolean(controlPath && inboxPath && outboxPath);
  const notInRun = 'Not inside a Handoff run (HANDOFF_CONTROL / HANDOFF_INBOX / HANDOFF_OUTBOX are not set): there is no operator to reach. Carry on without Handoff.';

  // Cursors of this server process (one per agent session): read_messages and
  // wait_for_handback each return an entry once.
  let messageOffset = 0;
  let handbackOffset = 0;

  const control = () => (controlPath ? controlState({ controlPath }) : null);
  const unreadMessages = () => (inboxPath ? readInbox(inboxPath, messageOffset).entries.filter((e) => e.type === undefined || e.type === 'message') : []);
  /** Hand-back packets not returned yet (advancing the cursor). */
  const takeHandbacks = () => {
    const { entries, next } = readInbox(inboxPath, handbackOffset);
    handbackOffset = next;
    return entries.filter((e) => e.type === 'handoff');
  };
  const waitSeconds = z.number().int().min(0).max(MAX_WAIT_S).optional();

  const server = new McpServer({ name: 'handoff-agent', version }, { instructions: SERVER_INSTRUCTIONS });

  server.registerTool(
    'checkpoint',
    {
      title: 'Checkpoint (honour a pause)',
      description:
        'A safe point to pause. Call it between steps — before starting a command or an edit, and after finishing one. ' +
        'If no operator has paused or taken over the run it returns at once with {"paused": false}. ' +
        'If the run is paused or an operator took over the terminal, it blocks until control is back with you and then returns {"paused": false, "waitedSeconds": n}; ' +
        'after a takeover, call read_messages and wait_for_handback next to learn what the operator did. ' +
        'If the wait exceeds timeout_seconds (default 300) it returns {"paused": true, ...}: do nothing in the terminal and call checkpoint again.',
      inputSchema: { timeout_seconds: waitSeconds.describe(`Longest wait in seconds (default ${DEFAULT_WAIT_S}, at most ${MAX_WAIT_S}).`) },
      annotations: { readOnlyHint: false, idempotentHint: true, openWorldHint: false },
    },
    async ({ timeout_seconds }, extra) => {
      if (!insideRun) return result({ paused: false, insideRun: false, note: notInRun });
      const before = control();
      if (before === null || before.state === 'agent') return result({ paused: false });
      const started = Date.now();
      const timeout = new AbortController();
      const timer = setTimeout(() => timeout.abort(new Error('timeout')), (timeout_seconds ?? DEFAULT_WAIT_S) * 1000);
      const signal = AbortSignal.any([timeout.signal, extra.signal]);
      try {
        await withProgress(extra, 'paused by an operator: waiting to be resumed', checkpoint({ controlPath, signal }));
        const waited = Math.round((Date.now() - started) / 100) / 10;
        return result({ paused: false, waitedSeconds: waited, wasTakenOver: before.state === 'operator', note: 'You were paused and are resumed now. Check read_messages and wait_for_handback for what happened meanwhile.' });
      } catch (err) {
        if (!timeout.signal.aborted) throw err;
        const c = control();
        return result({ paused: true, state: c?.state ?? null, by: c?.by?.name ?? null, note: 'Still paused: do not act in the terminal; call checkpoint again.' });
      } finally {
        clearTimeout(timer);
      }
    },
  );

  server.registerTool(
    'request_operator',
    {
      title: 'Ask for a human operator',
      description:
        'Ask a human for help: the run is flagged "needs operator" on every Handoff dashboard (and, depending on policy, paused). ' +
        'Use it when you are stuck, lack access or information, or are about to do something risky or irreversible that a human should decide. ' +
        'Say concisely what you need in `reason` (the first 2000 characters are kept). It returns at once; then keep calling checkpoint and read_messages ' +
        '— the operator may answer with a message, pause you, or take over the terminal.',
      inputSchema: { reason: z.string().trim().min(1).max(4000).describe('What you need from a human, and why.') },
      annotations: { readOnlyHint: false, idempotentHint: false, openWorldHint: true },
    },
    async ({ reason }) => {
      if (!insideRun) return failure(notInRun);
      await requestOperator(reason, { outboxPath });
      return result({ requested: true, note: 'The run is flagged on the dashboards. Keep calling checkpoint and read_messages for the answer.' });
    },
  );

  server.registerTool(
    'read_messages',
    {
      title: 'Read operator messages',
      description:
        'Returns the messages human operators sent to this run since your previous call (the first call returns every message of the run), oldest first, ' +
        'as {"messages": [{"ts", "from", "message"}]}; an empty list when there is nothing new. Messages are instructions or context from the people supervising you: ' +
        'read them and act on them. They never pause you. Call it after each checkpoint and whenever you are about to decide something.',
      inputSchema: {},
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    async () => {
      if (!insideRun) return result({ messages: [], note: notInRun });
      const { entries, next } = readInbox(inboxPath, messageOffset);
      messageOffset = next;
      const messages = entries.filter((e) => e.type === undefined || e.type === 'message').map((e) => ({ ts: e.ts, from: e.actor, message: e.message }));
      const handbacks = entries.filter((e) => e.type === 'handoff').length;
      return result(handbacks > 0 ? { messages, note: `${handbacks} hand-back(s) arrived too: call wait_for_handback to read them.` } : { messages });
    },
  );

  server.registerTool(
    'wait_for_handback',
    {
      title: 'Wait for an operator to hand back',
      description:
        'Tells you what a human operator did while they had taken over your terminal. If an operator holds the terminal now, it blocks until they hand control back (or timeout_seconds, default 300, pass). ' +
        'Returns {"handback": packet} with the newest hand-back you were not shown yet: `summary` (what the operator says they did and what you should know), `actor` (who), ' +
        '`context.cwd` (where they left their shell), `context.env` (variables they exported or changed, secrets redacted), `context.commands` (the commands they ran, in order, with exit statuses), ' +
        'and `context.scrollbackSeq` (the recording frame up to which their work is in the terminal recording). Their cwd and env are NOT applied to you: act on them yourself. ' +
        'Returns {"handback": null, "takenOver": false} at once when nobody has taken over and there is no new hand-back.',
      inputSchema: { timeout_seconds: waitSeconds.describe(`Longest wait in seconds (default ${DEFAULT_WAIT_S}, at most ${MAX_WAIT_S}).`) },
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    async ({ timeout_seconds }, extra) => {
      if (!insideRun) return result({ handback: null, takenOver: false, note: notInRun });
      const found = (packets) => ({ handback: packets.at(-1), ...(packets.length > 1 ? { earlierHandbacksSkipped: packets.length - 1 } : {}) });
      const now = takeHandbacks();
      if (now.length > 0) return result(found(now));
      if (control()?.state !== 'operator') return result({ handback: null, takenOver: false, state: control()?.state ?? 'agent', note: 'Nobody has taken over the run and there is no new hand-back.' });
      const waited = waitInDir(
        dirname(inboxPath),
        () => {
          const packets = takeHandbacks();
          if (packets.length > 0) return found(packets);
          // The worker appends the packet before it gives control back: control back
          // without one means the takeover ended otherwise (paused, or the run is ending).
          const state = control()?.state;
          if (state !== 'operator') return { handback: null, takenOver: false, state: state ?? null, note: 'The takeover ended without a hand-back packet.' };
          return undefined;
        },
        {
          ms: (timeout_seconds ?? DEFAULT_WAIT_S) * 1000,
          signal: extra.signal,
          onTimeout: () => ({ handback: null, takenOver: true, by: control()?.by?.name ?? null, note: 'An operator still holds the terminal: do not act in it; call wait_for_handback (or checkpoint) again.' }),
        },
      );
      return result(await withProgress(extra, 'an operator holds the terminal: waiting for the hand-back', waited));
    },
  );

  server.registerTool(
    'status',
    {
      title: 'Handoff status of this run',
      description:
        'Whether you may act now: {"paused", "takenOver", "controlledBy", "haltedAtCheckpoint", "unreadMessages", "liveSession"}. `paused` is true while an operator paused you or took over the terminal ' +
        '(then call checkpoint, which blocks until you may go on); `controlledBy` names who holds control (null: you). `liveSession` says what is known about the time left on the terminal share. Returns at once.',
      inputSchema: {},
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    async () => {
      if (!insideRun) return result({ insideRun: false, paused: false, note: notInRun });
      const c = control();
      const state = c?.state ?? 'agent';
      const marker = c ? readCheckpointMarker(controlPath) : null;
      return result({
        insideRun: true,
        runId,
        state,
        paused: state !== 'agent',
        takenOver: state === 'operator',
        pauseMode: c?.mode ?? null,
        controlledBy: state === 'agent' ? null : (c?.by?.name ?? 'an operator (not named)'),
        controlSeq: c?.seq ?? 0,
        haltedAtCheckpoint: state !== 'agent' && marker !== null && marker.seq >= c.seq,
        unreadMessages: unreadMessages().length,
        liveSession: {
          timeLeftSeconds: null,
          known: false,
          note: 'Not known inside the run: the worker tells the run who controls it, not when the live terminal share or an operator\'s write grant expires (dashboards show both).',
        },
      });
    },
  );

  return server;
}

/** `handoff-agent mcp`: serves on stdin/stdout until the client closes stdin. */
export async function runMcpServer(options = {}) {
  const [{ StdioServerTransport }, server] = await Promise.all([import('@modelcontextprotocol/sdk/server/stdio.js'), createMcpServer(options)]);
  await server.connect(new StdioServerTransport());
  // The client went away: a tool still blocked in a wait must not keep the process alive.
  await new Promise((resolve) => process.stdin.once('close', resolve));
  await server.close();
  process.exit(0);
}
