import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

// Every byte a worker sends over its websocket is masked by the worker and unmasked by the hub
// (RFC 6455: client frames are masked). ws does this in JavaScript, a byte at a time, unless it
// can load `bufferutil` (its native helper, an N-API prebuild: nothing is compiled at install):
// for 8 MiB of terminal output that was ~60 ms of hub CPU and ~50 ms of the worker's. pnpm
// links ws to `bufferutil` only when a package above it depends on it; this keeps that true.

/** ws's buffer-util as `pkg` (the hub or the worker package) loads it through `chain` of dependencies. */
function wsBufferUtil(pkg: string, chain: string[]): { mask: { name: string }; unmask: { name: string }; nativeFrom: string } {
  let req = createRequire(path.resolve(pkg, 'package.json'));
  for (const dep of chain) req = createRequire(req.resolve(dep));
  const wsDir = path.dirname(req.resolve('ws/package.json'));
  const fromWs = createRequire(path.join(wsDir, 'lib', 'buffer-util.js'));
  return { ...(fromWs('./buffer-util.js') as { mask: { name: string }; unmask: { name: string } }), nativeFrom: fromWs.resolve('bufferutil') };
}

describe('websocket masking is native on both ends of a worker connection', () => {
  it('the hub (socket.io → engine.io → ws) unmasks with bufferutil', () => {
    const util = wsBufferUtil('server', ['socket.io', 'engine.io']);
    expect(util.nativeFrom).toMatch(/bufferutil/);
    // Without bufferutil ws exports its own `_unmask` / `_mask`.
    expect(util.unmask.name).not.toBe('_unmask');
    expect(util.mask.name).not.toBe('_mask');
  });

  it('the worker (socket.io-client → engine.io-client → ws) masks with bufferutil', () => {
    const util = wsBufferUtil('worker', ['socket.io-client', 'engine.io-client']);
    expect(util.nativeFrom).toMatch(/bufferutil/);
    expect(util.mask.name).not.toBe('_mask');
    expect(util.unmask.name).not.toBe('_unmask');
  });
});
