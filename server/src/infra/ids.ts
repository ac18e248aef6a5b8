import { v7 } from 'uuid';

/**
 * A UUID v7 (the maintained `uuid` package): time-ordered (ms timestamp first) and
 * monotonic within a millisecond (a counter follows the timestamp), so ids sort by creation.
 * The time is the process clock's: the counter only holds across calls that use it.
 */
export function uuidv7(): string {
  return v7();
}
