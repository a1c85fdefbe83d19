#!/bin/sh
# Runs once, when the compose stack's PostgreSQL initialises its data folder: the services' runtime
# role. The owner (POSTGRES_USER) runs migrations; `migrate` grants this role what the services need.
set -eu
psql -v ON_ERROR_STOP=1 -v pw="$TICKETING_DB_RUNTIME_PASSWORD" \
     --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE ticketing_runtime LOGIN PASSWORD :'pw';
SQL
