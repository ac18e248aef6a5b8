import type { Command } from '@handoff/shared';

const timeFormat = new Intl.DateTimeFormat(undefined, {
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
});

/** A timestamp in the viewer's locale, or an em dash. */
export function formatTime(iso: string | null): string {
  if (!iso) return '—';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : timeFormat.format(date);
}

/** "3m ago" style age of a timestamp relative to `now` (ms). */
export function formatAge(iso: string, now: number): string {
  const seconds = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86_400)}d ago`;
}

/** Elapsed time between two timestamps (end defaults to `now`, ms), e.g. "1m 05s". */
export function formatDuration(startIso: string | null, endIso: string | null, now: number): string {
  if (!startIso) return '—';
  const end = endIso ? new Date(endIso).getTime() : now;
  return formatSeconds(Math.max(0, Math.round((end - new Date(startIso).getTime()) / 1000)));
}

/** Whole seconds as the two largest units, e.g. "1h 05m", "1m 05s", "7s". */
function formatSeconds(total: number): string {
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h > 0) return `${h}h ${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m ${String(s).padStart(2, '0')}s`;
  return `${s}s`;
}

/** A command as a shell line: the script itself, or the argv quoted where needed. */
export function formatCommand(command: Command): string {
  if ('script' in command) return command.script;
  return command.argv.map((arg) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`)).join(' ');
}

/** Time left until `iso` relative to `now` (ms), e.g. "59m 12s", "1h 05m"; "expired" once past. */
export function formatCountdown(iso: string, now: number): string {
  const total = Math.round((new Date(iso).getTime() - now) / 1000);
  return total <= 0 ? 'expired' : formatSeconds(total);
}

/** Time left until `iso` relative to `now` (ms) as a clock, e.g. "12:34", "1:02:03"; "0:00" once past. Rounds up. */
export function formatClock(iso: string, now: number): string {
  const total = Math.max(0, Math.ceil((new Date(iso).getTime() - now) / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}
