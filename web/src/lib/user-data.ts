import type { IDisposable, Terminal } from '@xterm/xterm';

/** The part of xterm's (pinned, 6.0.0) internals that tells keystrokes from replies. */
interface CoreServiceLike {
  onUserInput(listener: () => void): IDisposable;
}

/**
 * Calls `handler` with what the user typed, pasted or otherwise entered in the terminal —
 * never with what xterm answers by itself to queries in the output it renders (device
 * attributes `ESC[c`, cursor position `ESC[6n`, DECRQSS, OSC 10/11/12 colours, title and
 * mode reports…). xterm emits both through `onData`; only user input fires its core
 * service's `onUserInput` first, synchronously, for the same data. A run's output must
 * never make a viewer's browser type into the run.
 *
 * Returns null when this xterm does not expose that signal (an upgrade changed it): the
 * caller must then send nothing rather than forward replies.
 */
export function onUserData(term: Terminal, handler: (data: string) => void): IDisposable | null {
  const core = (term as unknown as { _core?: { coreService?: Partial<CoreServiceLike> } })._core?.coreService;
  if (typeof core?.onUserInput !== 'function') return null;
  let typed = false;
  const input = core.onUserInput(() => (typed = true));
  const data = term.onData((text) => {
    if (!typed) return; // a reply xterm generated for the output, not a keystroke
    typed = false;
    handler(text);
  });
  return {
    dispose() {
      input.dispose();
      data.dispose();
    },
  };
}
