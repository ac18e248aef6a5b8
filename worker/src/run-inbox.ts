import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RunMessage } from '@handoff/shared';
import type { HandoffPacket } from './handoff-packet.js';
import type { Logger } from './logger.js';
import { RunFiles } from './run-script.js';

export interface RunInboxOptions {
  /** The run directory: `inbox.jsonl` (`$HANDOFF_INBOX`) and `inbox.ids` live there. */
  dir: string;
  logger: Logger;
}

/** Characters of a message shown in the status line. */
const FLASH_CHARS = 80;

/**
 * The run's inbox: operator messages appended as JSON lines `{ts, actor, message}` to
 * `$HANDOFF_INBOX`, where the agent SDK (`onMessage`) and `handoff-agent inbox` read them,
 * and hand-back packets (`{type: 'handoff', …}`, see handoff-packet.ts) for `onHandoff`.
 * Exactly once per message id (per control seq for a packet): the hub redelivers what it
 * has no ack for (after a reconnect, or a worker restart), so the ids already appended are
 * kept in memory and in `inbox.ids` next to the inbox. A line is appended before its id is
 * recorded: a crash in between may repeat it once, but never loses it.
 */
export class RunInbox {
  private readonly inboxPath: string;
  private readonly idsPath: string;
  private readonly log: Logger;
  private delivered: Set<string> | null = null;
  /** Deliveries run one at a time: lines keep the hub's order, and a redelivery racing the first sees its id. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(opts: RunInboxOptions) {
    this.inboxPath = join(opts.dir, RunFiles.inbox);
    this.idsPath = join(opts.dir, RunFiles.inboxIds);
    this.log = opts.logger;
  }

  /** Appends the message unless its id was delivered before. Resolves true when appended, false for a duplicate. */
  deliver(msg: Pick<RunMessage, 'messageId' | 'ts' | 'actor' | 'message'>): Promise<boolean> {
    return this.appendOnce(msg.messageId, { ts: msg.ts, actor: msg.actor, message: msg.message }, () =>
      this.log.info({ messageId: msg.messageId, chars: msg.message.length }, 'operator message delivered to the inbox'),
    );
  }

  /** Appends the hand-back packet of control change `seq` unless it was appended before. Resolves true when appended. */
  deliverHandoff(seq: number, packet: HandoffPacket): Promise<boolean> {
    // Not a uuid, so it never meets a message id.
    return this.appendOnce(`handoff:${seq}`, packet, () => undefined);
  }

  private appendOnce(id: string, entry: object, onAppended: () => void): Promise<boolean> {
    const next = this.queue.then(() => this.append(id, entry, onAppended));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async append(id: string, entry: object, onAppended: () => void): Promise<boolean> {
    const delivered = await this.loadDelivered();
    if (delivered.has(id)) {
      this.log.debug({ id }, 'already in the inbox; redelivery ignored');
      return false;
    }
    await appendLine(this.inboxPath, `${JSON.stringify(entry)}\n`);
    delivered.add(id);
    await appendLine(this.idsPath, `${id}\n`);
    onAppended();
    return true;
  }

  private async loadDelivered(): Promise<Set<string>> {
    if (!this.delivered) {
      const text = await readFile(this.idsPath, 'utf8').catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return '';
        throw err;
      });
      this.delivered = new Set(text.split('\n').filter(Boolean));
    }
    return this.delivered;
  }
}

/**
 * Appends one whole line with a single O_APPEND write, so a reader tailing the file never
 * sees two lines interleaved (the agent may append to files of the run too). Creates the file 0600.
 */
export async function appendLine(path: string, line: string): Promise<void> {
  const data = Buffer.from(line, 'utf8');
  const file = await open(path, 'a', 0o600);
  try {
    const { bytesWritten } = await file.write(data, 0, data.length);
    if (bytesWritten !== data.length) throw new Error(`short write to ${path} (${bytesWritten} of ${data.length} bytes)`);
  } finally {
    await file.close();
  }
}

/** The status line text of a message: `✉ <actor>: <first 80 characters>`. */
export function messageFlash(actor: string, message: string): string {
  const chars = Array.from(message.replace(/\s+/g, ' ').trim());
  const text = chars.length > FLASH_CHARS ? `${chars.slice(0, FLASH_CHARS).join('')}…` : chars.join('');
  return `✉ ${actor}: ${text}`;
}
