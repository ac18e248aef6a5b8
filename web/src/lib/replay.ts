// A run's recording (asciicast v2, as `GET /api/task-runs/:id/recording.cast` serves it),
// parsed for the dashboard's player.

export interface CastHeader {
  width: number;
  height: number;
  /** Unix seconds when the run started. */
  timestamp?: number;
  title?: string;
  env?: Record<string, string>;
}

/** One output frame: `seq` is the run's frame seq (frames are numbered 1, 2, 3… without gaps). */
export interface CastFrame {
  seq: number;
  /** Seconds since the run started. */
  time: number;
  data: string;
}

export interface Cast {
  header: CastHeader;
  frames: CastFrame[];
}

/**
 * Parses an asciicast v2 text. The hub writes one `o` line per recorded frame in seq order,
 * and a run's frames are numbered from 1 without gaps (DESIGN.md: recording), so the n-th
 * output line is frame seq n — the seq the timeline's "jump to replay" names.
 */
export function parseCast(text: string): Cast {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const first = lines.shift();
  if (!first) throw new Error('the recording is empty');
  const raw = JSON.parse(first) as Partial<CastHeader> & { version?: number };
  if (raw.version !== 2 || !Number.isInteger(raw.width) || !Number.isInteger(raw.height)) throw new Error('not an asciicast v2 recording');
  const header: CastHeader = { width: raw.width!, height: raw.height!, timestamp: raw.timestamp, title: raw.title, env: raw.env };
  const frames: CastFrame[] = [];
  for (const line of lines) {
    const event = JSON.parse(line) as [number, string, string];
    if (event[1] !== 'o') continue; // input or marker events: not output
    frames.push({ seq: frames.length + 1, time: event[0], data: event[2] });
  }
  return { header, frames };
}

/** The output of frames 1..seq, in order: what the terminal shows once frame `seq` is played. */
export function outputUpTo(frames: CastFrame[], seq: number): string {
  let out = '';
  for (const f of frames) {
    if (f.seq > seq) break;
    out += f.data;
  }
  return out;
}

/** Longest pause the player keeps between two frames, in recording seconds: an idle agent is not worth watching. */
export const IDLE_LIMIT_S = 2;

/** Wall-clock ms between frame `from` and the next one at `speed`, idle pauses capped at IDLE_LIMIT_S. */
export function delayMs(frames: CastFrame[], index: number, speed: number): number {
  const prev = frames[index - 1];
  const next = frames[index];
  if (!next) return 0;
  const gap = prev ? Math.max(0, next.time - prev.time) : 0;
  return (Math.min(gap, IDLE_LIMIT_S) * 1000) / speed;
}

/** Recording time at `seq` (seconds), for the clock beside the seek bar. */
export function timeAt(frames: CastFrame[], seq: number): number {
  return seq <= 0 ? 0 : (frames[Math.min(seq, frames.length) - 1]?.time ?? 0);
}

export const SPEEDS = [1, 2, 4, 8, 16] as const;

/** `83.4` → `1:23`. */
export function clock(seconds: number): string {
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}
