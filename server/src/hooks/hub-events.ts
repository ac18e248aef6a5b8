import type { RunRow } from '../infra/db/entities.js';

/**
 * Cross-feature reactions, declared once. A feature announces what happened; the
 * composition root (hub.ts) decides who reacts. So every dependency points one way: the
 * run service does not know live sessions exist, the session service does not know grants.
 */
export interface HubEventMap {
  /**
   * A run's process started (or a reclaimed running run): its default shares may start.
   * `repeat`: its worker reported the start again (see `LiveSessionService.onRunStarted`). Awaited.
   */
  'run.started': { run: RunRow; repeat?: boolean };
  /** A run left the active states: its live sessions end with it (`code` ERROR when it was lost). Awaited. */
  'run.ended': { runId: string; reason: string; code?: 'ERROR' };
  /** A run's exit was recorded: its audit chain is anchored. */
  'run.exited': { runId: string };
  /** A live session was created or extended: it may already be inside its grace window. */
  'session.created': { sessionId: string };
  /** A live session left the active states: its write grants end with it. */
  'session.ended': { sessionId: string; reason: string };
}

export type HubEventName = keyof HubEventMap;
type Handler<K extends HubEventName> = (payload: HubEventMap[K]) => void | Promise<void>;

/** A small typed event bus: `emit` runs the handlers in registration order and awaits each. */
export class HubEvents {
  private readonly handlers = new Map<HubEventName, Array<Handler<never>>>();

  on<K extends HubEventName>(name: K, handler: Handler<K>): void {
    const list = this.handlers.get(name) ?? [];
    list.push(handler as Handler<never>);
    this.handlers.set(name, list);
  }

  /** A failing handler rejects the emit: an awaited reaction is part of the command. */
  async emit<K extends HubEventName>(name: K, payload: HubEventMap[K]): Promise<void> {
    for (const handler of this.handlers.get(name) ?? []) await (handler as Handler<K>)(payload);
  }
}
