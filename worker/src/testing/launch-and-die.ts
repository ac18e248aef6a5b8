// A worker crashing at the worst moment of a run's start: this process starts a run with
// TmuxRun and SIGKILLs itself when the start is reported (`onLaunched`), before the command is
// let go. argv: <tmux> <runs dir> <run id> <script>. Used by tmux-run-adopt.test.ts.
import { pino } from 'pino';
import { TmuxRun } from '../tmux-run.js';

const [tmuxBin, runsDir, runId, script] = process.argv.slice(2) as [string, string, string, string];
await TmuxRun.start({
  runId,
  runsDir,
  command: { script },
  cwd: null,
  env: { PATH: process.env.PATH, LANG: 'C.UTF-8' },
  cols: 80,
  rows: 24,
  tmuxBin,
  onOutput: () => undefined,
  onLaunched: () => process.kill(process.pid, 'SIGKILL'),
  logger: pino({ level: 'silent' }),
});
