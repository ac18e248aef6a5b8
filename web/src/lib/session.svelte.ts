import { ROLE_RANK, type Whoami, roleSchema, whoamiSchema } from '@handoff/shared';
import { ApiError, api, errorMessage } from './api.js';
import { tokenStorage } from './token-storage.js';

/** Who is signed in: the API token and what the hub says it belongs to. */
export class Session {
  token = $state<string | null>(null);
  whoami = $state<Whoami | null>(null);
  /** A whoami check is in flight. */
  checking = $state(false);
  /** Why the last sign-in failed, for the login form. */
  error = $state<string | null>(null);

  /** Operators and admins may create and cancel runs; observers only watch. */
  get canOperate(): boolean {
    const role = roleSchema.safeParse(this.whoami?.role);
    return role.success && ROLE_RANK[role.data] >= ROLE_RANK.operator;
  }

  /** Signs in with the stored token, if any. */
  async restore(): Promise<void> {
    const token = tokenStorage.read();
    if (token) await this.login(token);
  }

  /** Checks `token` with `GET /api/auth/whoami`; keeps it only if the hub accepts it. */
  async login(raw: string): Promise<boolean> {
    const token = raw.trim();
    if (!token) {
      this.error = 'Paste an API token first.';
      return false;
    }
    this.checking = true;
    this.error = null;
    try {
      const whoami = await api('/auth/whoami', { token, schema: whoamiSchema });
      if (whoami.kind !== 'user') throw new ApiError('FORBIDDEN', 'This is a worker token; the dashboard needs a user token.');
      tokenStorage.write(token);
      this.token = token;
      this.whoami = whoami;
      return true;
    } catch (error) {
      // A rejected token is forgotten; an unreachable hub keeps it for the next visit.
      if (!(error instanceof ApiError && error.code === 'NETWORK')) tokenStorage.clear();
      this.error = errorMessage(error);
      return false;
    } finally {
      this.checking = false;
    }
  }

  logout(): void {
    tokenStorage.clear();
    this.token = null;
    this.whoami = null;
    this.error = null;
  }
}

export const session = new Session();
