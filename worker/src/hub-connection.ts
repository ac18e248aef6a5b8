import { io, type Socket } from 'socket.io-client';
import { z } from 'zod';
import { NAMESPACE, workerClientEvents, type Ack, type Clock, type HubToWorker, type TimerHandle, type WorkerToHub } from '@handoff/shared';
import type { HubLink, PayloadOf, ReportEvent, ResponseOf } from './hub-link.js';
import type { Logger } from './logger.js';
import type { InboundSocket } from './on.js';

type HubSocket = Socket<HubToWorker, WorkerToHub>;
type Hello = PayloadOf<'worker:hello'>;
type Welcome = ResponseOf<'worker:hello'>;

export interface HubConnectionOptions {
  /** HANDOFF_URL split: the hub nodes, tried round robin. */
  hubUrls: readonly string[];
  /** HANDOFF_WORKER_TOKEN (handshake auth; never logged). */
  token: string;
  logger: Logger;
  /** Owns the heartbeat and reconnect timers. */
  clock: Clock;
  /** How long to wait for any ack from the hub, in ms. */
  ackTimeoutMs: number;
  /** Largest delay between reconnect attempts, in ms; null: the hub's heartbeat interval (5 000 until the first hello). */
  maxReconnectDelayMs: number | null;
  /** Jitter of the reconnect delay, a number in [0, 1). Default `Math.random`. */
  random?: () => number;
  /** The hello to send on each connect, built at that moment. */
  hello: () => Hello;
  /** The hub accepted the hello: `ready` is already true, the heartbeat starts right after. */
  onGreeted: (welcome: Welcome, hello: Hello) => void;
  /** The connection went down (or is closing): nothing can be sent until the next greeting. */
  onOffline: () => void;
  /** The heartbeat to send, built at each beat. */
  heartbeat: () => PayloadOf<'worker:heartbeat'>;
  /** Registers the inbound handlers on each new socket (see on.ts). */
  listen: (socket: InboundSocket) => void;
}

/** The first attempt after a loss goes out after this long (ms, before jitter): a dead node usually has a live peer. */
const FIRST_RETRY_MS = 100;
/** The backoff's unit once a whole round of nodes failed (ms, doubled each round, before jitter). */
const BACKOFF_BASE_MS = 250;

/**
 * Delay before reconnect attempt `attempt` (0-based since the last greeting), in ms:
 * a full round of the node list at once-ish, then exponential backoff per round, capped
 * at `capMs`, with full jitter (half to all of it) so a fleet does not reconnect in step.
 */
export function reconnectDelay(attempt: number, nodes: number, capMs: number, random: () => number): number {
  const round = Math.floor(attempt / Math.max(1, nodes));
  const base = round === 0 ? FIRST_RETRY_MS : Math.min(capMs, BACKOFF_BASE_MS * 2 ** (round - 1));
  return Math.round(base * (0.5 + random() / 2));
}

/**
 * The worker's one connection to the hub: connects to a node, greets it, heartbeats,
 * and reconnects itself — to the next node in the list — when the connection fails or
 * drops. It is the runs' `HubLink`: a report is sent only while greeted.
 */
export class HubConnection implements HubLink {
  private readonly opts: HubConnectionOptions;
  private readonly log: Logger;
  private readonly random: () => number;
  private socket: HubSocket | null = null;
  private greeted = false;
  /** Bumped per connection: an answer to an earlier connection's hello is ignored. */
  private connection = 0;
  private heartbeat: TimerHandle | null = null;
  private reconnectTimer: TimerHandle | null = null;
  private reconnectAttempts = 0;
  /** Index into `hubUrls` of the node tried last: a failed or lost node makes the worker try the next one. */
  private urlIndex = -1;
  private heartbeatIntervalMs = 5000;
  private closing = false;
  private id: string | null = null;

  constructor(opts: HubConnectionOptions) {
    this.opts = opts;
    this.log = opts.logger;
    this.random = opts.random ?? Math.random;
  }

  /** True while connected and greeted by the hub. */
  get ready(): boolean {
    return this.greeted;
  }

  /** The id the hub gave this worker (null before the first hello). */
  get workerId(): string | null {
    return this.id;
  }

  /**
   * Connects to the next hub node (round robin). The worker reconnects itself rather than
   * through socket.io's own retry loop, which would stay on one node: when a node dies,
   * the next attempt goes to another one at once.
   */
  connect(): void {
    if (this.closing) return;
    this.urlIndex = (this.urlIndex + 1) % this.opts.hubUrls.length;
    const url = `${this.opts.hubUrls[this.urlIndex]}${NAMESPACE.worker}`;
    const socket: HubSocket = io(url, {
      transports: ['websocket'],
      auth: { token: this.opts.token },
      forceNew: true,
      reconnection: false,
      timeout: 5000,
    });
    this.socket = socket;
    const lost = () => {
      if (this.socket !== socket) return;
      socket.removeAllListeners();
      socket.close();
      this.socket = null;
      this.scheduleReconnect();
    };
    socket.on('connect', () => this.greet());
    socket.on('disconnect', (reason) => {
      this.goOffline();
      if (this.closing) this.log.info({ reason, url }, 'disconnected from hub');
      else this.log.warn({ reason, url }, 'disconnected from hub');
      lost();
    });
    socket.on('connect_error', (err) => {
      this.log.warn({ error: err.message, url }, 'cannot reach hub; trying the next node');
      lost();
    });
    this.opts.listen(socket as unknown as InboundSocket);
  }

  /** No reconnect from now on (the worker is stopping); the current connection stays for the final reports. */
  stopReconnecting(): void {
    this.closing = true;
    this.reconnectTimer?.cancel();
    this.reconnectTimer = null;
  }

  /** Goes offline and disconnects for good. */
  close(): void {
    this.stopReconnecting();
    this.goOffline();
    const socket = this.socket;
    this.socket = null;
    socket?.removeAllListeners();
    socket?.disconnect();
  }

  /** `HubLink.send`: emits with an ack timeout; `undefined` to `onAck` when no ack came or the link is down. */
  send<E extends ReportEvent>(event: E, payload: PayloadOf<E>, onAck: (ack: Ack<ResponseOf<E>> | undefined) => void): void {
    this.emit(event, payload, onAck, false);
  }

  private greet(): void {
    const socket = this.socket!;
    const connection = ++this.connection;
    const hello = this.opts.hello();
    this.emit(
      'worker:hello',
      hello,
      (ack) => {
        if (connection !== this.connection || !socket.connected) return;
        if (!ack?.ok) {
          this.log.error({ error: ack ? ack.error : 'no answer' }, 'hub did not accept worker:hello; reconnecting');
          socket.disconnect(); // the disconnect handler reconnects (to the next node)
          return;
        }
        const { workerId, name, heartbeatIntervalMs } = ack.data;
        this.id = workerId;
        this.greeted = true;
        this.reconnectAttempts = 0;
        this.heartbeatIntervalMs = heartbeatIntervalMs;
        this.log.info({ workerId, name, runs: hello.runs.length }, 'worker connected');
        this.opts.onGreeted(ack.data, hello);
        this.startHeartbeat(heartbeatIntervalMs);
      },
      true,
    );
  }

  private startHeartbeat(intervalMs: number): void {
    this.heartbeat?.cancel();
    this.heartbeat = this.opts.clock.setInterval(() => {
      if (!this.greeted) return;
      this.send('worker:heartbeat', this.opts.heartbeat(), (ack) => {
        if (ack && !ack.ok) this.log.warn({ error: ack.error }, 'hub refused heartbeat');
        else if (!ack && this.greeted) this.log.warn('heartbeat not acknowledged');
      });
    }, Math.max(100, intervalMs));
  }

  private goOffline(): void {
    this.greeted = false;
    this.heartbeat?.cancel();
    this.heartbeat = null;
    this.opts.onOffline();
  }

  /** The next attempt, on the next node, after `reconnectDelay` (capped near the heartbeat interval, so a worker is back long before the hub gives up on it). */
  private scheduleReconnect(): void {
    if (this.closing || this.reconnectTimer) return;
    const attempt = this.reconnectAttempts;
    this.reconnectAttempts += 1;
    const delay = reconnectDelay(attempt, this.opts.hubUrls.length, this.opts.maxReconnectDelayMs ?? this.heartbeatIntervalMs, this.random);
    this.log.info({ delayMs: delay, attempt }, 'reconnecting to hub');
    this.reconnectTimer = this.opts.clock.setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delay);
  }

  /**
   * Emits with an ack timeout and hands the handler a validated ack (`undefined` when
   * none came). A malformed ack counts as a transient INTERNAL error.
   */
  private emit<E extends ReportEvent>(event: E, payload: PayloadOf<E>, onAck: (ack: Ack<ResponseOf<E>> | undefined) => void, beforeHello: boolean): void {
    const socket = this.socket;
    if (!socket || !(beforeHello ? socket.connected : this.greeted)) {
      onAck(undefined);
      return;
    }
    const untyped = socket.timeout(this.opts.ackTimeoutMs) as unknown as {
      emit(event: string, payload: unknown, cb: (err: Error | null, res: unknown) => void): void;
    };
    untyped.emit(event, payload, (err, res) => onAck(err ? undefined : readAck(event, res)));
  }
}

const ackSchema = z.union([
  z.object({ ok: z.literal(true), data: z.unknown() }),
  z.object({ ok: z.literal(false), error: z.object({ code: z.string(), message: z.string() }).loose() }),
]);

/** Reads the hub's answer to `event` with the response schema in `shared/`. */
export function readAck<E extends ReportEvent>(event: E, res: unknown): Ack<ResponseOf<E>> {
  const malformed = { ok: false as const, error: { code: 'INTERNAL' as const, message: `malformed ${event} ack from hub` } };
  const envelope = ackSchema.safeParse(res);
  if (!envelope.success) return malformed;
  if (!envelope.data.ok) return envelope.data as Ack<ResponseOf<E>>;
  const data = workerClientEvents[event].response.safeParse(envelope.data.data);
  return data.success ? { ok: true, data: data.data as ResponseOf<E> } : malformed;
}
