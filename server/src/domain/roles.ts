import { ROLE_RANK, type Role } from '@handoff/shared';

/** True when `role` is at least `required` (observer < operator < admin). */
export function roleAtLeast(role: Role, required: Role): boolean {
  return ROLE_RANK[role] >= ROLE_RANK[required];
}
