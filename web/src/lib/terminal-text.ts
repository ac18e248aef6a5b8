import type { Terminal } from '@xterm/xterm';

declare global {
  interface Window {
    /** Test hook: the run page terminal's text (see exposeTerminalText). */
    __handoffTerminalText?: () => string;
  }
}

/**
 * The terminal buffer as plain text: one line per row, trailing spaces trimmed,
 * rows xterm soft-wrapped rejoined, and trailing empty rows dropped.
 */
export function terminalText(terminal: Terminal): string {
  const buffer = terminal.buffer.active;
  const lines: string[] = [];
  for (let y = 0; y < buffer.length; y++) {
    const line = buffer.getLine(y);
    if (!line) continue;
    const continues = buffer.getLine(y + 1)?.isWrapped ?? false;
    const text = line.translateToString(!continues);
    if (line.isWrapped && lines.length > 0) lines[lines.length - 1] += text;
    else lines.push(text);
  }
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines.join('\n');
}

/** Sets `window.__handoffTerminalText` for end-to-end tests; returns a function removing it. */
export function exposeTerminalText(terminal: Terminal): () => void {
  const read = () => terminalText(terminal);
  window.__handoffTerminalText = read;
  return () => {
    if (window.__handoffTerminalText === read) delete window.__handoffTerminalText;
  };
}
