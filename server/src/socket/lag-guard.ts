import type { Clock, TimerHandle } from '@handoff/shared';
import type { Logger } from 'pino';
import type { Socket } from 'socket.io';
import { rooms } from '@handoff/shared';
import type { DashboardNamespace } from './namespaces.js';

export interface LagGuardOptions {
  /** Bytes queued to one dashboard (its websocket's unsent data) past which it is lagging. */
  maxBufferedBytes: number;
  /** A socket lagging this long is disconnected (its client reconnects and resyncs), ms. */
  stuckAfterMs: number;
  /** How often this node looks at its dashboards' queues, ms. Default 250. */
  checkEveryMs?: number;
}

/** engine.io's connection, as far as the guard reads it: its queue and its websocket (`ws`). */
interface EngineConnection {
  writeBuffer?: Array<{ data?: unknown }>;
  transport?: { socket?: { bufferedAmount?: number; terminate?: () => void } };
}

/** What engine.io holds for one connection: packets not handed to the transport yet, and the websocket's unsent bytes. */
function queuedBytes(socket: Socket): number {
  const conn = socket.conn as unknown as EngineConnection;
  let bytes = conn.transport?.socket?.bufferedAmount ?? 0;
  for (const packet of conn.writeBuffer ?? []) bytes += typeof packet.data === 'string' ? packet.data.length : 1024;
  return bytes;
}

/**
 * Cuts an engine.io connection's websocket at once. A client that stopped reading never
 * completes a websocket's closing handshake (it cannot even receive the close frame): `ws`
 * would keep the connection, with everything queued to it, for its 30 s close timeout.
 */
export function cutConnection(conn: unknown): void {
  (conn as EngineConnection).transport?.socket?.terminate?.();
}

/**
 * A slow viewer never back-pressures the others (DESIGN.md §4): a dashboard whose outgoing
 * queue passes the bound joins the `lagging` room, which live terminal frames skip; once it
 * has drained it leaves the room and its client, seeing a gap, resyncs from the scrollback.
 * One that stays lagging is disconnected. A periodic look at this node's own sockets — no
 * work per frame, and a stuck client's memory is bounded by the queue bound.
 */
export class LagGuard {
  private readonly since = new Map<string, number>();
  private timer: TimerHandle | null = null;

  constructor(
    private readonly nsp: DashboardNamespace,
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly options: LagGuardOptions,
  ) {}

  start(): void {
    this.timer ??= this.clock.setInterval(() => this.check(), this.options.checkEveryMs ?? 250).unref();
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = null;
  }

  /** One look at every dashboard socket of this node. */
  check(): void {
    const now = this.clock.now();
    for (const [id, socket] of this.nsp.sockets) {
      const lagging = queuedBytes(socket) > this.options.maxBufferedBytes;
      const since = this.since.get(id);
      if (lagging && since === undefined) {
        this.since.set(id, now);
        void socket.join(rooms.lagging);
        this.log.warn({ socketId: id }, 'dashboard lagging: live frames skip it until it drains');
      } else if (lagging && since !== undefined && now - since >= this.options.stuckAfterMs) {
        this.log.warn({ socketId: id, laggingMs: now - since }, 'dashboard stuck: disconnected');
        this.since.delete(id);
        socket.disconnect(true);
        cutConnection(socket.conn);
      } else if (!lagging && since !== undefined) {
        this.since.delete(id);
        void socket.leave(rooms.lagging);
        // It cannot tell on its own: the output it missed may have been the run's last.
        socket.emit('term:resume', {});
        this.log.info({ socketId: id, laggingMs: now - since }, 'dashboard drained: live frames resume (it resyncs the gap)');
      }
    }
    for (const id of this.since.keys()) if (!this.nsp.sockets.has(id)) this.since.delete(id);
  }
}
