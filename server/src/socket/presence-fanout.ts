import { rooms, type PresenceKicked, type PresenceViewer } from '@handoff/shared';
import type { PresenceFanout } from '../presence/presence-service.js';
import type { DashboardNamespace } from './namespaces.js';

/** Presence pushes over the dashboard namespace; the adapter carries them to every node. */
export class SocketPresenceFanout implements PresenceFanout {
  constructor(
    private readonly nsp: DashboardNamespace,
    /** Forgets kicked connections in this node's presence (their node may be another one). */
    private readonly dropLocal: (runId: string, connIds: string[]) => void,
  ) {
    // A kick decided on another node: the kicked sockets may be held here.
    nsp.on('presence:drop', (runId, connIds) => this.dropLocal(runId, connIds));
  }

  updated(runId: string, viewers: PresenceViewer[]): void {
    this.nsp.to(rooms.run(runId)).emit('presence:updated', { runId, viewers });
  }

  kick(connIds: string[], notice: PresenceKicked): void {
    if (!connIds.length) return;
    // Each socket is in a room named by its id, on whichever node holds it.
    this.nsp.to(connIds).emit('presence:kicked', notice);
    this.nsp.in(connIds).socketsLeave([rooms.run(notice.runId), rooms.term(notice.runId)]);
    this.dropLocal(notice.runId, connIds);
    this.nsp.serverSideEmit('presence:drop', notice.runId, connIds);
  }
}
