import { AppError, ErrorCode } from '@handoff/shared';

/** A state machine as data: `table[state][event]` is the next state, absent = illegal. */
export type TransitionTable<S extends string, E extends string> = Readonly<Record<S, Partial<Record<E, S>>>>;

/** Applies `event` to `state`; an illegal transition is a STATE_CONFLICT naming both. */
export function transition<S extends string, E extends string>(
  machine: string,
  table: TransitionTable<S, E>,
  state: S,
  event: E,
): S {
  const next = table[state]?.[event];
  if (next === undefined) {
    throw new AppError({
      code: ErrorCode.STATE_CONFLICT,
      message: `${machine} cannot ${event} while ${state}`,
      details: { state, event },
    });
  }
  return next;
}

/** The states from which `event` is legal (used to build conditional `WHERE status IN (…)` updates). */
export function statesAllowing<S extends string, E extends string>(table: TransitionTable<S, E>, event: E): S[] {
  return (Object.keys(table) as S[]).filter((s) => table[s][event] !== undefined);
}
