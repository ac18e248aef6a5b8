/** The run page's views: the live terminal, its details, the audit timeline, the replay. */
export const RUN_TABS = ['terminal', 'details', 'timeline', 'replay'] as const;
export type RunTab = (typeof RUN_TABS)[number];

export type Route =
  | { name: 'runs' }
  | { name: 'run'; runId: string; tab: RunTab; at: number | null }
  | { name: 'wall' }
  | { name: 'approvals' }
  | { name: 'not-found'; path: string };

/**
 * `#/` → runs, `#/runs/<id>` → one run (terminal), `#/runs/<id>/<tab>` → one of its views
 * (`#/runs/<id>/replay?at=<seq>` seeks the replay to a frame), `#/wall` → the live wall,
 * `#/approvals` → the approval requests.
 */
export function parseRoute(hash: string): Route {
  const full = hash.replace(/^#/, '') || '/';
  const [path = '/', query = ''] = full.split('?', 2);
  if (path === '/') return { name: 'runs' };
  if (path === '/approvals') return { name: 'approvals' };
  if (path === '/wall') return { name: 'wall' };
  const run = /^\/runs\/([^/]+)(?:\/([a-z]+))?$/.exec(path);
  if (run?.[1]) {
    const tab = (run[2] ?? 'terminal') as RunTab;
    if (!RUN_TABS.includes(tab)) return { name: 'not-found', path: full };
    const at = Number(new URLSearchParams(query).get('at'));
    return {
      name: 'run',
      runId: decodeURIComponent(run[1]),
      tab,
      at: Number.isSafeInteger(at) && at > 0 ? at : null,
    };
  }
  return { name: 'not-found', path: full };
}

export const href = {
  runs: '#/',
  run: (runId: string, tab: RunTab = 'terminal', at?: number) =>
    `#/runs/${encodeURIComponent(runId)}${tab === 'terminal' ? '' : `/${tab}`}${at ? `?at=${at}` : ''}`,
  wall: '#/wall',
  approvals: '#/approvals',
};

/** The current hash route. */
export class Router {
  route = $state<Route>(parseRoute(window.location.hash));

  /** Follows `hashchange`; returns a stop function. */
  start(): () => void {
    const update = () => {
      this.route = parseRoute(window.location.hash);
    };
    update();
    window.addEventListener('hashchange', update);
    return () => window.removeEventListener('hashchange', update);
  }
}

export const router = new Router();
