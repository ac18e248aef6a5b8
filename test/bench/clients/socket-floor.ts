import { Redis } from 'ioredis';
import { connect, emitAck } from '../../support/clients.js';

/** `n` sequential socket.io ack round trips against the bare server, in ms. */
export async function bareAckRtts(bareUrl: string, n: number, warmup = 5): Promise<number[]> {
  const socket = await connect(bareUrl, '/', undefined);
  try {
    const out: number[] = [];
    for (let i = 0; i < warmup + n; i++) {
      const t = performance.now();
      await emitAck(socket, 'ping', {});
      if (i >= warmup) out.push(performance.now() - t);
    }
    return out;
  } finally {
    socket.close();
  }
}

/** `n` sequential Redis PUBLISH → subscriber delivery latencies (ioredis, two connections), in ms. */
export async function redisPubSub(redisUrl: string, n: number, warmup = 5): Promise<number[]> {
  const pub = new Redis(redisUrl);
  const sub = new Redis(redisUrl);
  const channel = `handoff-bench:${process.pid}:${Date.now()}`;
  try {
    await sub.subscribe(channel);
    const out: number[] = [];
    for (let i = 0; i < warmup + n; i++) {
      const got = new Promise<void>((resolve) => sub.once('message', () => resolve()));
      const t = performance.now();
      await pub.publish(channel, String(i));
      await got;
      if (i >= warmup) out.push(performance.now() - t);
    }
    return out;
  } finally {
    pub.disconnect();
    sub.disconnect();
  }
}
