import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server, type Socket } from 'socket.io';
import { NAMESPACE } from '@handoff/shared';

/**
 * A real socket.io server on 127.0.0.1, port 0, serving the `/worker` namespace: the hub's
 * side of the wire as the worker's unit tests script it (the full hub is in test/integration).
 */
export interface SocketHub {
  /** `http://127.0.0.1:<port>` (the worker appends the namespace). */
  readonly url: string;
  readonly io: Server;
  /** Sockets that completed the handshake, in order. */
  readonly sockets: Socket[];
  /** Handshakes seen, refused ones included. */
  handshakes: number;
  /** Refuse the next handshakes (the worker sees `connect_error`). */
  refuse: boolean;
  close(): Promise<void>;
}

export async function startSocketHub(onSocket: (socket: Socket) => void = () => {}): Promise<SocketHub> {
  const http = createServer();
  const io = new Server(http, { transports: ['websocket'] });
  const hub: SocketHub = {
    url: '',
    io,
    sockets: [],
    handshakes: 0,
    refuse: false,
    close: () => new Promise<void>((resolve) => io.close(() => resolve())),
  };
  const nsp = io.of(NAMESPACE.worker);
  nsp.use((_socket, next) => {
    hub.handshakes += 1;
    next(hub.refuse ? new Error('refused by the test hub') : undefined);
  });
  nsp.on('connection', (socket) => {
    hub.sockets.push(socket);
    onSocket(socket);
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  return Object.assign(hub, { url: `http://127.0.0.1:${(http.address() as AddressInfo).port}` });
}
