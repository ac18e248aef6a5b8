/**
 * Time as a dependency. Every service, sweeper, scheduler and timer owner takes a `Clock`;
 * production passes `systemClock`, tests a `ManualClock` they advance. The database clock
 * stays the judge of conditional updates: a `Clock` covers what the process decides itself —
 * and worker liveness, whose heartbeats the hub stamps and judges on its `Clock`.
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** `new Date(now())`. */
  date(): Date;
  /** Runs `fn` once after `ms`; the handle cancels it. */
  setTimeout(fn: () => void, ms: number): TimerHandle;
  /** Runs `fn` every `ms`; the handle cancels it. */
  setInterval(fn: () => void, ms: number): TimerHandle;
}

export interface TimerHandle {
  cancel(): void;
  /** Lets the process exit while the timer is pending (no-op on a manual clock). */
  unref(): TimerHandle;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  date: () => new Date(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(t), unref() { t.unref(); return this; } };
  },
  setInterval(fn, ms) {
    const t = setInterval(fn, ms);
    return { cancel: () => clearInterval(t), unref() { t.unref(); return this; } };
  },
};

interface ManualTimer {
  at: number;
  every: number | null;
  fn: () => void;
  cancelled: boolean;
}

/** A clock tests move by hand: `advance(ms)` fires due timers in time order. */
export class ManualClock implements Clock {
  private current: number;
  private timers: ManualTimer[] = [];

  constructor(start: number | Date = Date.UTC(2026, 0, 1)) {
    this.current = typeof start === 'number' ? start : start.getTime();
  }

  now(): number {
    return this.current;
  }

  date(): Date {
    return new Date(this.current);
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    return this.add({ at: this.current + Math.max(0, ms), every: null, fn, cancelled: false });
  }

  setInterval(fn: () => void, ms: number): TimerHandle {
    const every = Math.max(1, ms);
    return this.add({ at: this.current + every, every, fn, cancelled: false });
  }

  /** Moves time forward by `ms`, firing every timer that falls due, earliest first. */
  advance(ms: number): void {
    const target = this.current + ms;
    for (;;) {
      const due = this.timers
        .filter((t) => !t.cancelled && t.at <= target)
        .sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.current = due.at;
      if (due.every === null) due.cancelled = true;
      else due.at += due.every;
      due.fn();
    }
    this.timers = this.timers.filter((t) => !t.cancelled);
    this.current = target;
  }

  /** Sets the time (forward only), firing what falls due on the way. */
  set(to: number | Date): void {
    const ms = typeof to === 'number' ? to : to.getTime();
    if (ms > this.current) this.advance(ms - this.current);
  }

  /** Timers still pending. */
  get pending(): number {
    return this.timers.filter((t) => !t.cancelled).length;
  }

  private add(timer: ManualTimer): TimerHandle {
    this.timers.push(timer);
    return {
      cancel: () => {
        timer.cancelled = true;
      },
      unref() {
        return this;
      },
    };
  }
}
