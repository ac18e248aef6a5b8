import { AppError, ErrorCode } from '@handoff/shared';
import type { Orm } from './orm.js';
import { em } from './orm.js';

/** Append-only tables: the hub role may read and add rows, nothing else (docs/database-roles.md). */
export const APPEND_ONLY_TABLES = ['audit_events', 'audit_checkpoints'] as const;

/** A PostgreSQL role name we are willing to splice into GRANT statements. */
const ROLE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * The statements that give `role` what the hub needs on the current schema, and no more:
 * SELECT/INSERT/UPDATE/DELETE on ordinary tables, SELECT/INSERT on the append-only audit
 * tables, SELECT on schema_migrations (the hub checks it is up to date), sequences. Never
 * TRUNCATE, never ownership (an owner could disable the audit triggers). Re-run after each
 * migration that adds a table. The same statements are in docs/database-roles.sql.
 */
export function hubRoleGrants(role: string): string[] {
  if (!ROLE_NAME.test(role)) throw new AppError({ code: ErrorCode.VALIDATION, message: `role name "${role.slice(0, 80)}" must be lower case letters, digits and _ (at most 63)` });
  const appendOnly = APPEND_ONLY_TABLES.join(', ');
  return [
    `revoke all on all tables in schema public from ${role}`,
    `grant usage on schema public to ${role}`,
    `grant select, insert, update, delete on all tables in schema public to ${role}`,
    `revoke update, delete on ${appendOnly}, schema_migrations from ${role}`,
    `revoke insert on schema_migrations from ${role}`,
    `grant usage, select on all sequences in schema public to ${role}`,
  ];
}

/** Applies hubRoleGrants as the connected (owner) role, in one transaction. */
export async function grantHubRole(orm: Orm, role: string): Promise<string[]> {
  const statements = hubRoleGrants(role);
  await em(orm).transactional(async (tx) => {
    const [exists] = await tx.execute<{ n: number }[]>('select count(*)::int as n from pg_roles where rolname = ?', [role]);
    if (!exists?.n) throw new AppError({ code: ErrorCode.NOT_FOUND, message: `role ${role} does not exist: create it first (create role ${role} login password '…')` });
    for (const sql of statements) await tx.execute(sql);
  });
  return statements;
}
