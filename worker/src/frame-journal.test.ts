import { appendFile, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { FrameJournal } from './frame-journal.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

it('keeps the newest frames within the budget and cuts a line torn by a crash, so appends go on cleanly', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'handoff-journal-'));
  dirs.push(dir);
  const journal = new FrameJournal(join(dir, 'frames.jsonl'));
  for (let seq = 1; seq <= 5; seq += 1) journal.append({ seq, t: seq * 10, data: `frame ${seq} ✓\n` }, { offset: seq * 100, skip: seq % 2 });
  await appendFile(journal.path, '{"seq":6,"t":60,"da'); // the worker died mid-append

  const tail = await FrameJournal.readTail(journal.path, 25);
  expect(tail.last).toEqual({ seq: 5, t: 50, data: 'frame 5 ✓\n', offset: 500, skip: 1 });
  expect(tail.frames.map((f) => f.seq)).toEqual([4, 5]); // 10 characters each: the budget holds two (and always the last)
  journal.append({ seq: 6, t: 60, data: 'six' }, { offset: 600, skip: 0 });
  expect((await FrameJournal.readTail(journal.path, 1e6)).frames.map((f) => f.seq)).toEqual([1, 2, 3, 4, 5, 6]);
  expect((await readFile(journal.path, 'utf8')).split('\n')).toHaveLength(7);
  expect((await stat(journal.path)).mode & 0o777).toBe(0o600);
  // Closed (the run ended, or another worker adopted it): a later append opens the file again and goes on after the end.
  journal.close();
  journal.close();
  journal.append({ seq: 7, t: 70, data: 'seven' }, { offset: 700, skip: 0 });
  journal.close();
  expect((await FrameJournal.readTail(journal.path, 1e6)).last).toEqual({ seq: 7, t: 70, data: 'seven', offset: 700, skip: 0 });
  expect(await FrameJournal.readTail(join(dir, 'missing.jsonl'), 10)).toEqual({ last: null, frames: [] });
});
