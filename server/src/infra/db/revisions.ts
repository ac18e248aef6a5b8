import type { Em } from './orm.js';

/**
 * After a conditional `nativeUpdate` of `row`: the row in memory takes what was written and
 * the revision the database's trigger (migration 0004) gave the change, and the unit of
 * work takes it as persisted. Otherwise the push carries an old revision (dashboards drop
 * it) and the transaction's flush writes the same change a second time (a new revision).
 */
export async function syncWithDatabase<T extends object>(tx: Em, row: T, written: Partial<T>): Promise<void> {
  Object.assign(row, written);
  await tx.refresh(row);
}
