import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server } from 'socket.io';

/**
 * The floor for socket paths: a bare socket.io server (websocket only, like the hub) that
 * answers `ping` with an ack and can broadcast to everyone connected.
 */
export interface BareServer {
  url: string;
  io: Server;
  close(): Promise<void>;
}

export async function startBareServer(): Promise<BareServer> {
  const http = createServer();
  const io = new Server(http, { transports: ['websocket'], serveClient: false, maxHttpBufferSize: 8 * 1024 * 1024 });
  io.on('connection', (socket) => {
    socket.on('ping', (_payload: unknown, ack: (r: unknown) => void) => ack({ ok: true, data: {} }));
    socket.on('join', (room: string, ack: (r: unknown) => void) => {
      void socket.join(room);
      ack({ ok: true, data: {} });
    });
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const { port } = http.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    io,
    close: () => new Promise<void>((resolve) => io.close(() => resolve())),
  };
}
