import type { ApprovalRequest, Run } from '@handoff/shared';

/** Where this browser keeps its notification settings. */
const STORAGE_KEY = 'handoff.notifications';
/** The document title without a count. */
const BASE_TITLE = 'Handoff';

/** A browser's notification settings (localStorage): one per browser, not per account. */
export interface NotificationSettings {
  /** Show a system notification when something needs you. */
  enabled: boolean;
  /** Also play a short tone. */
  sound: boolean;
}

const DEFAULTS: NotificationSettings = { enabled: false, sound: false };

/** Something waiting for this operator: a run asking for one, or an approval they may decide. */
export interface Attention {
  /** Stable per occurrence: a second ask of the same run is a new one. */
  key: string;
  title: string;
  body: string;
  /** Where a click on the notification leads. */
  link: string;
}

/** A run asking for an operator; `link` opens it. */
export function runAttention(run: Pick<Run, 'id' | 'title' | 'needsOperator'>, link: string): Attention | null {
  if (!run.needsOperator) return null;
  return { key: `run:${run.id}:${run.needsOperator.at}`, title: `Needs an operator: ${run.title}`, body: run.needsOperator.reason, link };
}

/** A pending approval someone else asked for, that `me` (with `role`) may decide; `link` opens the approvals. */
export function approvalAttention(approval: ApprovalRequest, me: { id: string; role: string }, link: string): Attention | null {
  if (approval.status !== 'pending' || approval.requester.id === me.id) return null;
  if (!approval.approverRoles.includes(me.role) && me.role !== 'admin') return null;
  return { key: `approval:${approval.id}`, title: `Approval waiting: ${approval.action}`, body: `${approval.requester.name} asks${approval.runId ? ` on run ${approval.runId.slice(0, 8)}` : ''}`, link };
}

/** The document title with a count of what is waiting, e.g. "(2) Handoff". */
export function badgedTitle(count: number): string {
  return count > 0 ? `(${count}) ${BASE_TITLE}` : BASE_TITLE;
}

/**
 * Notifies this operator of what waits for them: the title carries the count, and — once they
 * enabled it with a click (the browser asks for permission only on a user gesture) — a system
 * notification and an optional tone for each new item. Items already waiting when the page
 * loaded only count; a notification is for something new.
 */
export class Notifications {
  settings = $state<NotificationSettings>(readSettings());
  /** `Notification.permission`, or 'unsupported'. */
  permission = $state<NotificationPermission | 'unsupported'>(typeof Notification === 'undefined' ? 'unsupported' : Notification.permission);
  /** What waits right now. */
  waiting = $state<Attention[]>([]);

  /** Keys already seen (notified, or waiting when first seen). */
  readonly #seen = new Set<string>();
  #primed = false;
  #audio: AudioContext | null = null;

  get active(): boolean {
    return this.settings.enabled && this.permission === 'granted';
  }

  /** Turns notifications on: asks for permission (call it from a click). */
  async enable(): Promise<void> {
    if (typeof Notification !== 'undefined' && Notification.permission === 'default') this.permission = await Notification.requestPermission();
    else if (typeof Notification !== 'undefined') this.permission = Notification.permission;
    this.#save({ ...this.settings, enabled: this.permission === 'granted' });
    if (this.settings.sound) this.#unlockAudio();
  }

  disable(): void {
    this.#save({ ...this.settings, enabled: false });
  }

  setSound(on: boolean): void {
    this.#save({ ...this.settings, sound: on });
    // Created inside the click: browsers only let a page make sound after a user gesture.
    if (on) this.#unlockAudio();
  }

  /**
   * The current set of waiting items (derived from the live run list and approvals). New keys
   * notify once; the first call after the data loaded only records what already waits.
   * `ready`: the data has loaded at least once (before that, an empty set means "not known yet").
   */
  update(items: Attention[], ready: boolean): void {
    this.waiting = items;
    if (typeof document !== 'undefined') document.title = badgedTitle(items.length);
    if (!ready) return;
    const fresh = items.filter((i) => !this.#seen.has(i.key));
    for (const item of fresh) this.#seen.add(item.key);
    if (!this.#primed) {
      this.#primed = true;
      return;
    }
    if (fresh.length === 0 || !this.active) return;
    for (const item of fresh) this.#show(item);
    if (this.settings.sound) this.#beep();
  }

  /** Forgets what was seen (sign-out): the next account starts afresh. */
  reset(): void {
    this.#seen.clear();
    this.#primed = false;
    this.waiting = [];
    if (typeof document !== 'undefined') document.title = BASE_TITLE;
  }

  #show(item: Attention): void {
    try {
      const n = new Notification(item.title, { body: item.body, tag: item.key });
      n.onclick = () => {
        window.focus();
        window.location.hash = item.link;
        n.close();
      };
    } catch {
      // Some browsers only allow notifications from a service worker: the title badge still counts.
    }
  }

  #unlockAudio(): void {
    if (this.#audio || typeof AudioContext === 'undefined') return;
    this.#audio = new AudioContext();
  }

  /** Two short soft tones; no file to load. */
  #beep(): void {
    const ctx = this.#audio;
    if (!ctx) return;
    void ctx.resume();
    for (const [i, freq] of [880, 660].entries()) {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      const start = ctx.currentTime + i * 0.18;
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, start);
      gain.gain.exponentialRampToValueAtTime(0.15, start + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.16);
      osc.connect(gain).connect(ctx.destination);
      osc.start(start);
      osc.stop(start + 0.17);
    }
  }

  #save(settings: NotificationSettings): void {
    this.settings = settings;
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(settings));
    } catch {
      // Storage refused (private mode, quota): the setting holds for this page.
    }
  }
}

function readSettings(): NotificationSettings {
  try {
    const raw = JSON.parse(localStorage.getItem(STORAGE_KEY) ?? 'null') as Partial<NotificationSettings> | null;
    return { enabled: raw?.enabled === true, sound: raw?.sound === true };
  } catch {
    return { ...DEFAULTS };
  }
}

export const notifications = new Notifications();
