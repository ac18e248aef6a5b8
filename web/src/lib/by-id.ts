/** Lists of records with an `id` that arrive twice: once from REST, once pushed. */
export interface WithId {
  id: string;
}

/** Replaces the record with `item`'s id in place, or appends `item`. Returns whether it was new. */
export function upsertById<T extends WithId>(list: T[], item: T): boolean {
  const index = list.findIndex((x) => x.id === item.id);
  if (index === -1) {
    list.push(item);
    return true;
  }
  list[index] = item;
  return false;
}

/**
 * A fresh page merged with what is already known: the page wins for the records it has,
 * records only known locally (pushed while the page was in flight) are kept, and the
 * result is sorted by `compare`.
 */
export function mergeById<T extends WithId>(known: readonly T[], page: readonly T[], compare: (a: T, b: T) => number): T[] {
  const byId = new Map(known.map((x) => [x.id, x]));
  for (const item of page) byId.set(item.id, item);
  return [...byId.values()].sort(compare);
}
