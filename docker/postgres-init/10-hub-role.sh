#!/bin/sh
# Runs once, when the postgres volume is first initialised: the hubs' least-privilege login
# role (docs/database-roles.md). It owns nothing; the `migrate` service grants it what the
# hub needs after each migration (`cli.js db grant-hub-role --role handoff_hub`).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v pw="$HANDOFF_HUB_DB_PASSWORD" <<'SQL'
create role handoff_hub login password :'pw' nosuperuser nocreatedb nocreaterole noinherit;
SQL
