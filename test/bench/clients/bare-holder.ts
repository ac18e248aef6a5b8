import { startBareServer } from '../lib/bare.js';
import { serveClient } from '../lib/child.js';

// The floor's server in a process of its own (its RSS is measured): reports its URL, serves
// until the runner says stop, and returns how many clients it held at that point.
serveClient<Record<string, never>, { held: number }>(async (_p, ctx) => {
  const bare = await startBareServer();
  ctx.event({ url: bare.url });
  await ctx.message();
  const held = bare.io.of('/').sockets.size;
  await bare.close();
  return { held };
});
