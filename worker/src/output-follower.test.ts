import { randomInt } from 'node:crypto';
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Frame } from '@handoff/shared';
import { FrameBatcher } from './frame-batcher.js';
import { completeUtf8Length, OutputFollower, type OutputPosition } from './output-follower.js';
import { until } from './testing/shares.js';

const silent = pino({ level: 'silent' });
const dirs: string[] = [];
const followers: OutputFollower[] = [];
afterEach(async () => {
  for (const f of followers.splice(0)) f.close();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'handoff-follow-'));
  dirs.push(dir);
  return dir;
}

/** Valid multibyte characters, ASCII and broken sequences, as bytes. */
function mixedBytes(n: number): Buffer {
  const pieces = ['a', '\n', 'é', '✓', '😀', '中'].map((s) => Buffer.from(s));
  const broken = [Buffer.from([0xe2, 0x82]), Buffer.from([0xf0, 0x9f]), Buffer.from([0xc3]), Buffer.from([0xbf]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0xff])];
  const out: Buffer[] = [];
  let size = 0;
  while (size < n) {
    const piece = randomInt(10) === 0 ? broken[randomInt(broken.length)]! : pieces[randomInt(pieces.length)]!;
    out.push(piece);
    size += piece.length;
  }
  return Buffer.concat(out);
}

describe('completeUtf8Length', () => {
  it('cuts only where decoding is unaffected: any split of any bytes decodes like the whole', () => {
    for (let round = 0; round < 300; round += 1) {
      const bytes = mixedBytes(200);
      let text = '';
      let tail = Buffer.alloc(0);
      let at = 0;
      while (at < bytes.length) {
        const next = Math.min(bytes.length, at + 1 + randomInt(7));
        const buf = Buffer.concat([tail, bytes.subarray(at, next)]);
        const n = completeUtf8Length(buf);
        text += buf.subarray(0, n).toString('utf8');
        tail = buf.subarray(n);
        at = next;
      }
      text += tail.toString('utf8');
      expect(text).toBe(bytes.toString('utf8'));
    }
  });

  it('holds back exactly a still-valid start of a character', () => {
    expect(completeUtf8Length(Buffer.from([0x61, 0xf0, 0x9f, 0x98]))).toBe(1);
    expect(completeUtf8Length(Buffer.from([0x61, 0xe2, 0x9c]))).toBe(1);
    expect(completeUtf8Length(Buffer.from([0x61, 0xed, 0xa0]))).toBe(3); // a surrogate: invalid already
    expect(completeUtf8Length(Buffer.from('a😀'))).toBe(5);
  });
});

describe('OutputFollower', () => {
  it('follows appends at once, and a position after any frame resumes exactly after it', async () => {
    const dir = await tempDir();
    const path = join(dir, 'output.log');
    const pipes = join(dir, 'output.pipes');
    await writeFile(path, '');
    let followed = '';
    const frames: Array<{ frame: Frame; at: OutputPosition }> = [];
    // Frames much smaller than a read: most end inside one read (positions with `skip`).
    const batcher = new FrameBatcher({ flushMs: 1, maxFrameChars: 333, onFrame: (frame, through) => frames.push({ frame, at: follower.positionAt(through) }) });
    const follower = new OutputFollower({ path, pipesPath: pipes, onText: (t) => ((followed += t), batcher.push(t)), logger: silent, readBytes: 4096 });
    followers.push(follower);
    await follower.start();

    const bytes = mixedBytes(60_000);
    for (let at = 0; at < bytes.length; ) {
      const next = Math.min(bytes.length, at + 1 + randomInt(9000));
      await appendFile(path, bytes.subarray(at, next));
      at = next;
    }
    await writeFile(pipes, 'o\nc\n');
    expect(await follower.finish(2000)).toBe(true);
    batcher.flush();
    expect(followed).toBe(bytes.toString('utf8'));
    expect(frames.map((f) => f.frame.data).join('')).toBe(followed);
    expect(frames.some((f) => f.at.skip > 0)).toBe(true);

    for (const k of [0, 1, Math.floor(frames.length / 3), frames.length - 2]) {
      let resumed = '';
      const again = new OutputFollower({ path, pipesPath: pipes, from: frames[k]!.at, onText: (t) => (resumed += t), logger: silent });
      followers.push(again);
      await again.start();
      expect(await again.finish(2000)).toBe(true);
      expect(resumed).toBe(frames.slice(k + 1).map((f) => f.frame.data).join(''));
    }
  });

  it('wakes on each append (no polling interval to wait for)', async () => {
    const dir = await tempDir();
    const path = join(dir, 'output.log');
    await writeFile(path, '');
    let followed = '';
    const follower = new OutputFollower({ path, pipesPath: join(dir, 'output.pipes'), onText: (t) => (followed += t), logger: silent });
    followers.push(follower);
    await follower.start();
    for (const word of ['k', 'e', 'y']) {
      const t0 = performance.now();
      await appendFile(path, word);
      await until(() => followed.endsWith(word), `echo of ${word}`, 1000);
      expect(performance.now() - t0).toBeLessThan(100);
    }
  });

  it('finish() waits until every capture pipe that started has ended', async () => {
    const dir = await tempDir();
    const path = join(dir, 'output.log');
    const pipes = join(dir, 'output.pipes');
    await writeFile(path, '');
    await writeFile(pipes, 'o\no\nc\n'); // an operator shell's pipe is still open
    const follower = new OutputFollower({ path, pipesPath: pipes, onText: () => undefined, logger: silent });
    followers.push(follower);
    await follower.start();
    const done = follower.finish(3000);
    await new Promise((r) => setTimeout(r, 200));
    await appendFile(pipes, 'c\n');
    const t0 = Date.now();
    expect(await done).toBe(true);
    expect(Date.now() - t0).toBeLessThan(500);
    expect(await new OutputFollower({ path, pipesPath: join(dir, 'none'), onText: () => undefined, logger: silent }).finish(100)).toBe(false);
  });

  it('reads only while the receiver has room; the rest waits in the file, resumes where it stopped, and delivered waits for it', async () => {
    const dir = await tempDir();
    const path = join(dir, 'output.log');
    const pipes = join(dir, 'output.pipes');
    const bytes = mixedBytes(50_000);
    await writeFile(path, Buffer.concat([bytes, Buffer.from([0xe2, 0x82])])); // ends inside a character
    await writeFile(pipes, 'o\nc\n');
    let followed = '';
    let room = 10_000; // characters the receiver takes before it is full
    const follower = new OutputFollower({ path, pipesPath: pipes, onText: (t) => ((followed += t), (room -= t.length)), canRead: () => room > 0, logger: silent, readBytes: 1024 });
    followers.push(follower);
    let delivered = false;
    void follower.delivered.then(() => (delivered = true));
    await follower.start();
    expect(await follower.finish(2000)).toBe(true);
    // Stopped within one read past the room: the rest is still in the file.
    expect(followed.length).toBeGreaterThanOrEqual(10_000);
    expect(followed.length).toBeLessThan(10_000 + 1024);
    expect(delivered).toBe(false);
    const before = followed.length;
    await new Promise((r) => setTimeout(r, 50));
    expect(followed.length).toBe(before); // no room, no reading
    while (!delivered) {
      room = 10_000;
      follower.resume();
      await until(() => delivered || room <= 0, 'the next part read', 2000);
    }
    // Everything, in order, and the broken last character as U+FFFD only at the very end.
    expect(followed).toBe(Buffer.concat([bytes, Buffer.from([0xe2, 0x82])]).toString('utf8'));
    expect(followed.endsWith('\ufffd')).toBe(true);
  });

  it('reads a backlog in slices of at most 1 MiB, the event loop running between them, and misses nothing', async () => {
    const dir = await tempDir();
    const path = join(dir, 'output.log');
    const pipes = join(dir, 'output.pipes');
    const backlog = Buffer.alloc(3 * 1024 * 1024 + 123, 'x'); // a re-adopted run's output, all there at start
    await writeFile(path, backlog);
    let followed = 0;
    const follower = new OutputFollower({ path, pipesPath: pipes, onText: (t) => (followed += t.length), logger: silent });
    followers.push(follower);
    await follower.start();
    // start() read the first slice; the rest waits for the event loop's next turns.
    expect(followed).toBeGreaterThan(0);
    expect(followed).toBeLessThanOrEqual(1024 * 1024);
    await until(() => followed === backlog.length, 'the whole backlog', 5000);
    await appendFile(path, 'tail');
    await until(() => followed === backlog.length + 4, 'the append after it', 2000);
  });
});
