import { kickViewerResponseSchema, type PresenceKicked, type PresenceViewer } from '@handoff/shared';
import { api, runPath } from './api.js';
import { Commands } from './commands.svelte.js';
import type { HubConnection } from './hub.svelte.js';

/**
 * Who watches one run right now (`presence:updated`, pushed to the run room by every hub
 * node on each join, leave, kick or expiry) and the per-viewer kick. `kicked` is set when
 * this browser was the one removed: the page then says why instead of the terminal.
 */
export class RunPresence extends Commands {
  viewers = $state<PresenceViewer[]>([]);
  kicked = $state<PresenceKicked | null>(null);

  readonly runId: string;

  constructor(runId: string) {
    super();
    this.runId = runId;
  }

  /** Listens to the run room's presence pushes (the room is joined by RunDetail.follow). */
  follow(hub: HubConnection): () => void {
    const offUpdated = hub.on('presence:updated', ({ runId, viewers }) => {
      if (runId === this.runId) this.viewers = viewers;
    });
    const offKicked = hub.on('presence:kicked', (notice) => {
      if (notice.runId === this.runId) this.kicked = notice;
    });
    return () => {
      offUpdated();
      offKicked();
    };
  }

  /** `POST …/viewers/kick`: cuts that user's connections to the run and ends their write grant. */
  kick(token: string, userId: string, reason?: string): Promise<void> {
    return this.run(`kick:${userId}`, () =>
      api(runPath(this.runId, '/viewers/kick'), { token, method: 'POST', body: reason ? { userId, reason } : { userId }, schema: kickViewerResponseSchema }),
    );
  }
}
