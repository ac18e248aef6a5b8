// Handoff agent SDK: what an agent process uses, inside a Handoff run, to honour pauses,
// read operator messages and ask for a human. Plain Node (20+) and no dependencies: an
// agent runs with the run's environment, not inside the Handoff monorepo. Types and docs:
// index.d.ts. The files it uses (all in the run directory, created by the worker):
//   $HANDOFF_CONTROL   {seq, state, mode}: the desired control state, replaced atomically by the worker
//   checkpoint.json    {seq, at, pid}: written next to it by checkpoint() when it halts (the worker watches it)
//   $HANDOFF_INBOX     JSON lines: {ts, actor, message} operator messages,
//                      {type: 'handoff', ts, actor, actorId, summary, correlationId, context} hand-back packets
//   $HANDOFF_OUTBOX    JSON lines: {type: 'request-operator', reason, ts}, read by the worker
import { closeSync, openSync, readFileSync, readSync, renameSync, statSync, watch, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Name of the checkpoint marker, in the directory of the control file. */
export const CHECKPOINT_FILE = 'checkpoint.json';

const fromEnv = (name) => process.env[name] || null;

/** The desired control state (`{seq, state, mode}`), or null outside a run or before any control change. */
export function controlState(options = {}) {
  const path = options.controlPath ?? fromEnv('HANDOFF_CONTROL');
  return path ? readControl(path) : null;
}

function readControl(path) {
  let text;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return null; // no control change yet (or the run is over)
  }
  try {
    const parsed = JSON.parse(text);
    return parsed && typeof parsed.seq === 'number' && typeof parsed.state === 'string' ? parsed : null;
  } catch {
    return null; // the worker replaces it with a rename: a torn read cannot happen, but never block on garbage
  }
}

const mayRun = (control) => control === null || control.state === 'agent';

/**
 * Resolves at once while the agent may run; while the run is paused (or taken over),
 * tells the worker this agent halted here and resolves once control is back with the agent.
 */
export function checkpoint(options = {}) {
  const path = options.controlPath ?? fromEnv('HANDOFF_CONTROL');
  if (!path || mayRun(readControl(path))) return Promise.resolve();
  const dir = dirname(path);
  const name = basename(path);
  return new Promise((resolve, reject) => {
    let marked = 0;
    let done = false;
    const finish = (err) => {
      if (done) return;
      done = true;
      watcher.close();
      options.signal?.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve();
    };
    const check = () => {
      if (done) return;
      const control = readControl(path);
      if (mayRun(control)) return finish();
      if (control.seq !== marked) {
        // The marker names the seq it honours: a newer pause is acknowledged again.
        marked = control.seq;
        try {
          writeMarker(dir, control.seq);
        } catch (err) {
          finish(err);
        }
      }
    };
    const onAbort = () => finish(options.signal.reason ?? new Error('checkpoint aborted'));
    // The watch starts before the state is read again, so a change in between is not missed.
    // The directory is watched, not the file: the worker replaces the file (a new inode).
    const watcher = watch(dir, (_event, file) => {
      if (file === null || file === name) check();
    });
    watcher.on('error', (err) => finish(err));
    if (options.signal?.aborted) return onAbort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    check();
  });
}

function writeMarker(dir, seq) {
  const path = join(dir, CHECKPOINT_FILE);
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ seq, at: new Date().toISOString(), pid: process.pid })}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}

/** Calls `cb({ts, actor, message})` for each operator message in the inbox. Returns an unsubscribe function. */
export function onMessage(cb, options = {}) {
  return tailInbox(options, (entry) => {
    if (entry.type === undefined || entry.type === 'message') cb({ ts: entry.ts, actor: entry.actor, message: entry.message });
  });
}

/** Calls `cb(packet)` for each hand-back packet (`type: 'handoff'`) in the inbox. Returns an unsubscribe function. */
export function onHandoff(cb, options = {}) {
  return tailInbox(options, (entry) => {
    if (entry.type === 'handoff') cb(entry);
  });
}

/**
 * Calls `cb` for every inbox entry, in file order: operator messages as
 * `{type: 'message', ts, actor, message}`, hand-back packets as they are. Returns an unsubscribe function.
 */
export function onInbox(cb, options = {}) {
  return tailInbox(options, (entry) => {
    if (entry.type === 'handoff') cb(entry);
    else if (entry.type === undefined || entry.type === 'message') cb({ type: 'message', ts: entry.ts, actor: entry.actor, message: entry.message });
  });
}

/**
 * Follows the inbox: watches its directory (no polling) and reads what was appended since
 * the last read, line by line; a line still being written waits for its newline. Lines
 * already there are read synchronously, before this returns (unless `fromStart: false`).
 */
function tailInbox(options, onEntry) {
  const path = options.inboxPath ?? fromEnv('HANDOFF_INBOX');
  if (!path) return () => undefined;
  const name = basename(path);
  let offset = options.fromStart === false ? sizeOf(path) : 0;
  let partial = Buffer.alloc(0);
  let closed = false;
  const chunk = Buffer.alloc(64 * 1024);

  const read = () => {
    if (closed) return;
    let fd;
    try {
      fd = openSync(path, 'r');
    } catch {
      return; // not there (yet, or any more)
    }
    const lines = [];
    try {
      if (statSync(path).size < offset) {
        offset = 0; // replaced or truncated: start over
        partial = Buffer.alloc(0);
      }
      for (;;) {
        const n = readSync(fd, chunk, 0, chunk.length, offset);
        if (n === 0) break;
        offset += n;
        let rest = Buffer.concat([partial, chunk.subarray(0, n)]);
        for (let nl = rest.indexOf(0x0a); nl !== -1; nl = rest.indexOf(0x0a)) {
          lines.push(rest.subarray(0, nl).toString('utf8'));
          rest = rest.subarray(nl + 1);
        }
        partial = Buffer.from(rest);
      }
    } finally {
      closeSync(fd);
    }
    for (const line of lines) {
      if (closed) return;
      let entry;
      try {
        entry = JSON.parse(line);
      } catch {
        continue; // not a line the worker wrote
      }
      if (!entry || typeof entry !== 'object') continue;
      try {
        onEntry(entry);
      } catch (err) {
        // Like an EventEmitter listener: the callback's error is the agent's, not the SDK's.
        process.nextTick(() => {
          throw err;
        });
      }
    }
  };

  const watcher = watch(dirname(path), (_event, file) => {
    if (file === null || file === name) read();
  });
  watcher.on('error', () => undefined); // the run directory went away with the run
  // A subscription alone does not keep the agent alive (unless asked, e.g. `inbox --follow`).
  if (!options.keepAlive) watcher.unref();
  read();
  return () => {
    closed = true;
    watcher.close();
  };
}

function sizeOf(path) {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/**
 * Asks for a human: the worker reports `run:needs-operator` to the hub, which highlights
 * the run on every dashboard. Resolves true once written, false outside a Handoff run.
 */
export async function requestOperator(reason, options = {}) {
  if (typeof reason !== 'string' || reason.trim() === '') throw new TypeError('requestOperator: reason must be a non-empty string');
  const path = options.outboxPath ?? fromEnv('HANDOFF_OUTBOX');
  if (!path) return false;
  // One write of the whole line (O_APPEND): the worker never reads half of it next to another.
  const line = Buffer.from(`${JSON.stringify({ type: 'request-operator', reason, ts: new Date().toISOString() })}\n`, 'utf8');
  const file = await open(path, 'a', 0o600);
  try {
    const { bytesWritten } = await file.write(line, 0, line.length);
    if (bytesWritten !== line.length) throw new Error(`short write to ${path}`);
  } finally {
    await file.close();
  }
  return true;
}
