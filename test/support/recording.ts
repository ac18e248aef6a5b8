import { expect } from 'vitest';

/** The run's recording as a user downloads it (`GET …/recording.cast`): the output text, in order, with \r\n as \n. */
export async function recordedText(hubUrl: string, token: string, runId: string): Promise<string> {
  const res = await fetch(`${hubUrl}/api/task-runs/${runId}/recording.cast`, { headers: { authorization: `Bearer ${token}` } });
  if (res.status !== 200) throw new Error(`recording.cast answered ${res.status}`);
  const [, ...events] = (await res.text()).trim().split('\n').map((l) => JSON.parse(l) as [number, string, string]);
  return events.map((e) => e[2]).join('').replace(/\r\n/g, '\n');
}

/** A shell script printing `<prefix>-1` … `<prefix>-<n>`, one line every `sleepS` seconds. */
export function numberedLinesScript(prefix: string, n: number, sleepS = 0.05): string {
  return `for i in $(seq 1 ${n}); do echo "${prefix}-$i"; sleep ${sleepS}; done`;
}

/** Asserts `text` holds `<prefix>-1` … `<prefix>-<n>` each exactly once and in order (other lines, e.g. notices, are ignored). */
export function expectNumberedLines(text: string, prefix: string, n: number): void {
  const seen = text.split('\n').filter((l) => l.startsWith(`${prefix}-`));
  const missing = Array.from({ length: n }, (_, i) => `${prefix}-${i + 1}`).filter((l) => !seen.includes(l));
  const duplicated = seen.filter((l, i) => seen.indexOf(l) !== i);
  expect({ missing, duplicated, count: seen.length }).toEqual({ missing: [], duplicated: [], count: n });
  expect(seen).toEqual(Array.from({ length: n }, (_, i) => `${prefix}-${i + 1}`));
}
