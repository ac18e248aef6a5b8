-- Least-privilege PostgreSQL roles for Handoff (docs/database-roles.md). Run as a superuser
-- once to create the roles, then, after every migration, the grants as the OWNER — or just run
-- `pnpm handoff db grant-hub-role --role handoff_hub` with MIGRATION_DATABASE_URL = the owner,
-- which migrates and then issues exactly the grants below (server/src/db/hub-role.ts).

-- 1. Once, as a superuser: the owner (migrations) and the hub's login role.
create role handoff login password 'owner-secret';
create role handoff_hub login password 'hub-secret' nosuperuser nocreatedb nocreaterole noinherit;
create database handoff owner handoff;
\connect handoff
alter schema public owner to handoff;

-- 2. As the owner, after `pnpm migrate`: what the hub needs, and no more.
revoke all on all tables in schema public from handoff_hub;
grant usage on schema public to handoff_hub;
grant select, insert, update, delete on all tables in schema public to handoff_hub;
-- The audit tables are append-only for the hub: no UPDATE, DELETE or TRUNCATE; and not being
-- their owner, it cannot ALTER TABLE … DISABLE TRIGGER the append-only triggers either.
revoke update, delete on audit_events, audit_checkpoints, schema_migrations from handoff_hub;
-- The hub reads the migration ledger (it refuses to start on a schema that is behind).
revoke insert on schema_migrations from handoff_hub;
grant usage, select on all sequences in schema public to handoff_hub;
