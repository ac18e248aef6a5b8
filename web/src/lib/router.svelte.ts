export type Route = { name: 'runs' } | { name: 'run'; runId: string } | { name: 'approvals' } | { name: 'not-found'; path: string };

/** `#/` → runs, `#/runs/<id>` → one run, `#/approvals` → the approval requests. */
export function parseRoute(hash: string): Route {
  const path = hash.replace(/^#/, '') || '/';
  if (path === '/') return { name: 'runs' };
  if (path === '/approvals') return { name: 'approvals' };
  const run = /^\/runs\/([^/]+)$/.exec(path);
  if (run?.[1]) return { name: 'run', runId: decodeURIComponent(run[1]) };
  return { name: 'not-found', path };
}

export const href = {
  runs: '#/',
  run: (runId: string) => `#/runs/${encodeURIComponent(runId)}`,
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
