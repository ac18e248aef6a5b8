import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { Server, type Socket } from 'socket.io';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { AppError, ErrorCode } from '@handoff/shared';
import { connect, emitAck } from '../../../test/support/clients.js';
import { socketEvents } from './on.js';

// socketEvents on a real socket.io server and clients: the listeners are made once and
// shared by every socket (an idle socket holds none of its own), yet each event reaches its
// handler with the state of the socket it came on.
const table = {
  whoami: { payload: z.object({ say: z.string().max(20) }), response: z.object({ id: z.string(), said: z.string() }) },
  fail: { payload: z.object({}), response: z.object({}) },
};

describe('socketEvents', () => {
  const io = new Server(createServer(), { transports: ['websocket'] });
  const sockets: Socket[] = [];
  let url = '';

  beforeAll(async () => {
    const attach = socketEvents(table, pino({ level: 'silent' }), {
      whoami: async (state, { say }) => ({ id: state.id, said: say }),
      fail: async () => {
        throw new AppError({ code: ErrorCode.STATE_CONFLICT, message: 'not now' });
      },
    }, { state: (socket: Socket) => ({ id: socket.id }) });
    io.on('connection', (socket) => {
      sockets.push(socket);
      attach(socket);
    });
    const http = io.httpServer;
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await io.close();
  });

  it('shares its listeners across sockets and hands each event its own socket’s state', async () => {
    const [a, b] = await Promise.all([connect(url, '/', undefined), connect(url, '/', undefined)]);
    try {
      expect(sockets).toHaveLength(2);
      const [sa, sb] = sockets as [Socket, Socket];
      expect(sa.listeners('whoami')).toHaveLength(1);
      expect(sa.listeners('whoami')[0]).toBe(sb.listeners('whoami')[0]);
      expect(sa.listeners('fail')[0]).toBe(sb.listeners('fail')[0]);

      const [fromA, fromB] = await Promise.all([emitAck(a, 'whoami', { say: 'a' }), emitAck(b, 'whoami', { say: 'b' })]);
      expect(fromA).toEqual({ ok: true, data: { id: sa.id, said: 'a' } });
      expect(fromB).toEqual({ ok: true, data: { id: sb.id, said: 'b' } });

      // Bad input and a failing handler: an error envelope, the socket kept.
      const bad = await emitAck(a, 'whoami', { say: 'x'.repeat(21) });
      expect(bad.ok).toBe(false);
      expect(bad.ok ? null : bad.error.code).toBe(ErrorCode.VALIDATION);
      const refused = await emitAck(b, 'fail', {});
      expect(refused).toMatchObject({ ok: false, error: { code: ErrorCode.STATE_CONFLICT, message: 'not now' } });
      expect(a.connected && b.connected).toBe(true);
      expect((await emitAck(a, 'whoami', { say: 'again' })).ok).toBe(true);
    } finally {
      a.close();
      b.close();
    }
  });
});
