import { cpus, loadavg, totalmem } from 'node:os';
import { spread, type Spread } from './stats.js';

/** One statistic of a figure: Handoff's value and its floor's, one number per repeat. */
export interface Stat {
  /** e.g. "p50", "appends/s". */
  label: string;
  unit: string;
  handoff: number[];
  /** The same statistic of the floor, measured in the same repeats; null when the figure has none. */
  floor: number[] | null;
  /** The goal, as text, and how to judge it on the medians (undefined: no goal for this statistic). */
  goal?: { text: string; met(handoff: number, floor: number | null): boolean };
}

export interface FigureResult {
  name: string;
  title: string;
  /** What the floor is, in words. */
  floor: string;
  stats: Stat[];
  notes: string[];
  repeats: number;
}

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  loadBefore: number[];
  loadAfter?: number[];
}

export function machine(): Machine {
  const cpu = cpus();
  return { cpu: cpu[0]?.model.trim() ?? 'unknown', cores: cpu.length, memoryGiB: totalmem() / 2 ** 30, node: process.version, loadBefore: loadavg() };
}

const fmt = (x: number): string => {
  if (!Number.isFinite(x)) return '–';
  const a = Math.abs(x);
  if (a >= 10_000) return Math.round(x).toLocaleString('en-US');
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  return x.toFixed(3);
};
const fmtSpread = (s: Spread): string => `${fmt(s.min)} / **${fmt(s.median)}** / ${fmt(s.max)}`;
const loads = (l: number[]): string => l.map((x) => x.toFixed(2)).join(' ');

/** The row cells of one statistic: Handoff and floor (min / median / max), ratio of medians, goal, met. */
function row(fig: FigureResult, stat: Stat): string[] {
  const h = spread(stat.handoff);
  const f = stat.floor ? spread(stat.floor) : null;
  const ratio = f && f.median !== 0 ? `${fmt(h.median / f.median)}×` : '–';
  const met = stat.goal ? (stat.goal.met(h.median, f?.median ?? null) ? 'yes' : '**no**') : '–';
  return [fig.name, `${stat.label} (${stat.unit})`, fmtSpread(h), f ? fmtSpread(f) : '–', ratio, stat.goal?.text ?? '–', met];
}

const HEADER = ['figure', 'statistic', 'Handoff min / **median** / max', 'floor min / **median** / max', 'ratio (medians)', 'goal', 'met'];

export function markdownTable(figs: FigureResult[]): string {
  const lines = [`| ${HEADER.join(' | ')} |`, `|${HEADER.map(() => '---').join('|')}|`];
  for (const fig of figs) for (const stat of fig.stats) lines.push(`| ${row(fig, stat).join(' | ')} |`);
  return lines.join('\n');
}

/** A plain-text table for the terminal (same cells, no markdown emphasis). */
export function textTable(figs: FigureResult[]): string {
  const rows = [HEADER, ...figs.flatMap((fig) => fig.stats.map((s) => row(fig, s)))].map((r) => r.map((c) => c.replace(/\*\*/g, '')));
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r, ri) => {
    const line = r.map((c, i) => c.padEnd(widths[i]!)).join('  ');
    return ri === 0 ? `${line}\n${widths.map((w) => '-'.repeat(w)).join('  ')}` : line;
  }).join('\n');
}

export function machineLine(m: Machine): string {
  return `${m.cpu}, ${m.cores} cores, ${m.memoryGiB.toFixed(1)} GiB, Node ${m.node}; load average (1/5/15 min) before ${loads(m.loadBefore)}, after ${m.loadAfter ? loads(m.loadAfter) : '–'}`;
}

export function markdownReport(opts: { figs: FigureResult[]; machine: Machine; quick: boolean; startedAt: Date; durationMs: number; command: string; failures: string[] }): string {
  const { figs, quick } = opts;
  const out = [
    quick ? '# Benchmarks (quick mode)' : '# Benchmarks',
    '',
    quick
      ? `Written by \`${opts.command}\`: quick mode — one repeat, smaller n; for before/after checks, not for quoting. The full run (\`pnpm bench\`) writes [benchmarks.md](benchmarks.md).`
      : `Written by \`${opts.command}\` (rewritten by every full run; \`pnpm bench --quick\` writes [benchmarks-quick.md](benchmarks-quick.md) instead). Source: \`test/bench/\`.`,
    '',
    `Every figure is measured beside its floor in the same run, with the clients in processes of their own; each statistic is given as min / **median** / max over the repeats, the ratio compares the medians, and a goal (from issue 10) is judged on the medians.`,
    '',
    `- Run: ${opts.startedAt.toISOString()}, ${(opts.durationMs / 1000).toFixed(0)} s`,
    `- Machine: ${machineLine(opts.machine)}`,
    '',
    markdownTable(figs),
    '',
    '## Figures',
    '',
  ];
  for (const fig of figs) {
    out.push(`### ${fig.name} — ${fig.title}`, '', `Floor: ${fig.floor}. Repeats: ${fig.repeats}.`, '');
    for (const n of fig.notes) out.push(`- ${n}`);
    out.push('');
  }
  if (opts.failures.length) out.push('## Failed figures', '', ...opts.failures.map((f) => `- ${f}`), '');
  return out.join('\n');
}
