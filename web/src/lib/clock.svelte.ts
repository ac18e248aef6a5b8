import { createSubscriber } from 'svelte/reactivity';

/** Tick of the reactive clock, in ms. */
const TICK_MS = 1000;

/** A reactive "now" (ms since epoch) that ticks while something on screen reads it. */
export class Clock {
  #now = Date.now();
  readonly #subscribe = createSubscriber((update) => {
    this.#now = Date.now();
    const timer = setInterval(() => {
      this.#now = Date.now();
      update();
    }, TICK_MS);
    return () => clearInterval(timer);
  });

  get now(): number {
    this.#subscribe();
    return this.#now;
  }
}

export const clock = new Clock();
