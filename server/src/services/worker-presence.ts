import { em, type Orm } from '../db/orm.js';

/**
 * Whether a worker is heard from: `online` while it says hello or heartbeats, `offline`
 * when its last socket left, `lost` when the sweeper found it silent for
 * WORKER_LOST_AFTER. Each write tells whether the worker had been declared lost, so the
 * caller can reclaim its runs.
 */
export class WorkerPresence {
  constructor(private readonly orm: Orm) {}

  /** A hello on a new socket; `connectedAt` identifies this connection for `left`. Returns true if it had been lost. */
  async hello(workerId: string, capacity: number, version: string, connectedAt: Date): Promise<boolean> {
    return this.heard(workerId, `, capacity = ?, version = ?, connected_at = ?`, [capacity, version, connectedAt]);
  }

  /** A heartbeat (possibly on a socket that never dropped while the worker was frozen). Returns true if it had been lost. */
  async heartbeat(workerId: string): Promise<boolean> {
    return this.heard(workerId, '', []);
  }

  private async heard(workerId: string, set: string, params: unknown[]): Promise<boolean> {
    // The row lock makes the read of the previous status and the write one step.
    const rows = await em(this.orm).execute<{ was: string }[]>(
      `update workers w set status = 'online', last_heartbeat_at = now()${set}
         from (select id, status from workers where id = ? for update) old
        where w.id = old.id
        returning old.status as was`,
      [...params, workerId],
    );
    return rows[0]?.was === 'lost';
  }

  /**
   * The socket of the hello made at `connectedAt` left: offline, unless a newer hello (on
   * any node) replaced it meanwhile, or the sweeper already found it lost.
   */
  async left(workerId: string, connectedAt: Date): Promise<void> {
    await em(this.orm).execute(`update workers set status = 'offline' where id = ? and connected_at = ? and status = 'online'`, [workerId, connectedAt]);
  }
}
