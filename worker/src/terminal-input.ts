/**
 * Keystrokes for a tmux pane, byte for byte. `send-keys -l` types text literally, but two
 * things cannot go through it (tmux 3.3a): a NUL (Ctrl-@, Ctrl-Space) cannot be in an
 * argv at all, and tmux's command parser reads an argument ending in `;` as a command
 * separator and drops the `;` (`ls;` would arrive as `ls`). So control bytes (C0, DEL) and
 * `;` go as raw bytes (`send-keys -H`, never interpreted as key names), everything else
 * as literal runs (`send-keys -l`, UTF-8 kept whole). Invocations are cut to stay below
 * tmux's limit on a client command (16 KiB of packed arguments: "command too long").
 */

/** Packed-argument bytes (each argument plus its NUL) allowed per tmux client invocation. */
const MAX_INVOCATION_BYTES = 12_000;
/** Bytes of one literal run: a long paste is split into several `-l` arguments. */
const MAX_RUN_BYTES = 4_000;

/** Whether a code point goes as a raw byte (`-H`) rather than in a literal run. */
const isRawByte = (cp: number) => cp < 0x20 || cp === 0x7f || cp === 0x3b;

type Piece = { literal: string } | { bytes: number[] };

/** Splits `data` into literal runs and raw bytes, in order. */
function pieces(data: string): Piece[] {
  const out: Piece[] = [];
  let run = '';
  let runBytes = 0;
  let raw: number[] = [];
  const endRun = () => {
    if (run !== '') out.push({ literal: run });
    run = '';
    runBytes = 0;
  };
  const endRaw = () => {
    if (raw.length > 0) out.push({ bytes: raw });
    raw = [];
  };
  for (const ch of data) {
    const cp = ch.codePointAt(0)!;
    if (isRawByte(cp)) {
      endRun();
      raw.push(cp);
      continue;
    }
    endRaw();
    // A lone surrogate encodes as U+FFFD (3 bytes), like Buffer.from does.
    const bytes = Buffer.byteLength(ch, 'utf8');
    if (runBytes + bytes > MAX_RUN_BYTES) endRun();
    run += ch;
    runBytes += bytes;
  }
  endRun();
  endRaw();
  return out;
}

/**
 * The `send-keys` commands (each an argument list) that type `data` into the pane `target`
 * (e.g. `%3`), in order: what a control-mode client (tmux-control-client.ts) sends, one per line.
 */
export function sendKeysCommands(target: string, data: string): string[][] {
  const commands: string[][] = [];
  for (const piece of pieces(data)) {
    if ('literal' in piece) {
      commands.push(['send-keys', '-t', target, '-l', '--', piece.literal]);
      continue;
    }
    // Raw bytes: 3 packed bytes each ("0d\0"); cut long control sequences into several commands.
    for (let i = 0; i < piece.bytes.length; i += 1000) {
      commands.push(['send-keys', '-t', target, '-H', ...piece.bytes.slice(i, i + 1000).map((b) => b.toString(16).padStart(2, '0'))]);
    }
  }
  return commands;
}

/**
 * The tmux client argument lists (one per invocation, each a `;`-separated list of
 * `send-keys` commands) that type `data` into the pane `target` (e.g. `%3`). Run them one
 * after another, in order.
 */
export function sendKeysInvocations(target: string, data: string): string[][] {
  const invocations: string[][] = [];
  let current: string[] = [];
  let size = 0;
  const cost = (args: readonly string[]) => args.reduce((n, a) => n + Buffer.byteLength(a, 'utf8') + 1, 0);
  for (const command of sendKeysCommands(target, data)) {
    const c = cost(command) + 2; // and the `;` between commands
    if (current.length > 0 && size + c > MAX_INVOCATION_BYTES) {
      invocations.push(current);
      current = [];
      size = 0;
    }
    current.push(...(current.length > 0 ? [';'] : []), ...command);
    size += c;
  }
  if (current.length > 0) invocations.push(current);
  return invocations;
}
