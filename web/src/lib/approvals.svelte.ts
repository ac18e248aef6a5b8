import { type ApprovalRequest, approvalListSchema, approvalSchema } from '@handoff/shared';
import { api, errorMessage } from './api.js';
import { upsertById } from './by-id.js';
import type { HubConnection } from './hub.svelte.js';

const newestFirst = (a: ApprovalRequest, b: ApprovalRequest) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id);

/**
 * Approval requests (operators and admins): `GET /api/approvals`, then live through the
 * `approvals` room (`approval:updated` on create, resolve and expiry).
 */
export class ApprovalsStore {
  /** Every known request, newest first. */
  approvals = $state<ApprovalRequest[]>([]);
  loading = $state(false);
  /** The list was read at least once (until then, an empty list means "not known yet"). */
  loaded = $state(false);
  /** Why the list or the live updates are unavailable. */
  error = $state<string | null>(null);
  /** The request being approved or denied. */
  busy = $state<string | null>(null);
  /** Why resolving a request failed, by request id. */
  failures = $state<Record<string, string>>({});

  #token = '';

  /** Waiting for a decision, oldest first (the one waiting longest on top). */
  get pending(): ApprovalRequest[] {
    return this.approvals.filter((a) => a.status === 'pending').reverse();
  }

  /** Approved, denied or expired, newest first. */
  get resolved(): ApprovalRequest[] {
    return this.approvals.filter((a) => a.status !== 'pending');
  }

  byId(id: string): ApprovalRequest | undefined {
    return this.approvals.find((a) => a.id === id);
  }

  /**
   * Joins the `approvals` room and reads the list on every (re)connect (catching up on
   * what was pushed while offline). Returns a stop function that forgets the list.
   */
  follow(hub: HubConnection, token: string): () => void {
    this.#token = token;
    const off = hub.on('approval:updated', (approval) => this.#apply(approval));
    const unregister = hub.whileConnected(() => {
      hub.request('approvals:subscribe', {}).catch((error: unknown) => {
        this.error = `live approval updates unavailable: ${errorMessage(error)}`;
      });
      void this.reload();
    });
    return () => {
      off();
      unregister();
      this.approvals = [];
      this.loaded = false;
      this.error = null;
      this.failures = {};
    };
  }

  /** Pending requests and the recent history; the pending ones are read on their own so history never crowds them out. */
  async reload(): Promise<void> {
    this.loading = true;
    try {
      const token = this.#token;
      const [pending, recent] = await Promise.all([
        api('/approvals?status=pending', { token, schema: approvalListSchema }),
        api('/approvals', { token, schema: approvalListSchema }),
      ]);
      for (const approval of [...recent.approvals, ...pending.approvals]) this.#apply(approval);
      this.loaded = true;
      this.error = null;
    } catch (error) {
      this.error = errorMessage(error);
    } finally {
      this.loading = false;
    }
  }

  approve(id: string, reason?: string): Promise<void> {
    return this.#resolve(id, 'approve', reason);
  }

  deny(id: string, reason?: string): Promise<void> {
    return this.#resolve(id, 'deny', reason);
  }

  async #resolve(id: string, decision: 'approve' | 'deny', reason?: string): Promise<void> {
    if (this.busy) return;
    this.busy = id;
    delete this.failures[id];
    try {
      const body = reason?.trim() ? { reason: reason.trim() } : {};
      this.#apply(await api(`/approvals/${encodeURIComponent(id)}/${decision}`, { token: this.#token, method: 'POST', body, schema: approvalSchema }));
    } catch (error) {
      this.failures[id] = errorMessage(error);
    } finally {
      this.busy = null;
    }
  }

  #apply(approval: ApprovalRequest): void {
    // A resolved request never goes back to pending: a page read before a push must not undo it.
    const known = this.byId(approval.id);
    if (known && known.status !== 'pending' && approval.status === 'pending') return;
    if (upsertById(this.approvals, approval)) this.approvals.sort(newestFirst);
  }
}
