import { z } from 'zod';

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** Parses `250ms`, `90s`, `15m`, `1h`, `30d` or a bare number of milliseconds. Returns ms or null. */
export function parseDuration(text: string): number | null {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!match) return null;
  const unit = (match[2] ?? 'ms') as keyof typeof UNIT_MS;
  const ms = Math.round(Number(match[1]) * UNIT_MS[unit]);
  return Number.isFinite(ms) ? ms : null;
}

/** A zod duration accepting `90s`/`15m`/`1h` strings (or ms numbers), giving ms. */
export function duration(defaultValue: string) {
  return z
    .union([z.string(), z.number()])
    .default(defaultValue)
    .transform((value, ctx) => {
      const ms = typeof value === 'number' ? value : parseDuration(value);
      if (ms === null || ms < 0) {
        ctx.addIssue({ code: 'custom', message: `"${value}" is not a duration (use e.g. 90s, 15m, 1h)` });
        return z.NEVER;
      }
      return ms;
    });
}
