/** Anything the hub pushes with a revision (runs, live sessions, write grants). */
export interface Revisioned {
  id: string;
  revision: number;
}

/**
 * Pushes from several hub nodes can overtake each other on the way: a state is taken only
 * if it is newer than the one shown (the hub bumps `revision` on every change of the row).
 */
export function isNewer(incoming: Revisioned, known: Revisioned | null | undefined): boolean {
  return !known || incoming.revision > known.revision;
}

/** Per id, the newer of what is shown and what arrived; the order of `incoming` is kept. */
export function newestById<T extends Revisioned>(incoming: readonly T[], known: readonly T[]): T[] {
  const byId = new Map(known.map((k) => [k.id, k]));
  return incoming.map((item) => {
    const current = byId.get(item.id);
    return current && !isNewer(item, current) ? current : item;
  });
}
