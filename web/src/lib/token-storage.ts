const KEY = 'handoff.token';

/** The API token kept in localStorage between visits. */
export const tokenStorage = {
  read(): string | null {
    return localStorage.getItem(KEY);
  },
  write(token: string): void {
    localStorage.setItem(KEY, token);
  },
  clear(): void {
    localStorage.removeItem(KEY);
  },
};

/**
 * Moves a `#token=...` link (printed by the hub on first start) into storage and
 * strips it from the address bar and history, so it is neither shown nor bookmarked.
 * Returns whether a token was found.
 */
export function consumeTokenFromFragment(): boolean {
  const match = /^#token=([^&]+)/.exec(window.location.hash);
  if (!match?.[1]) return false;
  tokenStorage.write(decodeURIComponent(match[1]));
  window.history.replaceState(null, '', `${window.location.pathname}${window.location.search}#/`);
  return true;
}
