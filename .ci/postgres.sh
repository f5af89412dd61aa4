#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for tests/test_postgres.py and print its SQLAlchemy URL.
#
#   export ODIMO_TEST_POSTGRES_URL="$(.ci/postgres.sh)"     # start (idempotent), print the URL
#   .ci/postgres.sh stop                                    # stop it and delete its data
#
# The server listens on 127.0.0.1 only (port $ODIMO_PG_PORT, default 55432) with trust
# authentication, keeps its data and socket under /tmp, and holds one database, odimo_test.
# initdb refuses to run as root: as root, the server runs as the system user odimo_pg (created if
# missing). Progress goes to stderr; stdout is only the URL.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/local/bin}
PSQL=${PSQL:-/usr/bin/psql}
PORT=${ODIMO_PG_PORT:-55432}
DATA=${ODIMO_PG_DATA:-/tmp/odimo-pg-$PORT}
OS_USER=odimo_pg
DB_USER=odimo_pg
DB=odimo_test

as_server_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u "$OS_USER" -- "$@"
    else
        "$@"
    fi
}

if [ "${1:-start}" = stop ]; then
    if [ -f "$DATA/PG_VERSION" ]; then
        as_server_user "$PG_BIN/pg_ctl" -D "$DATA" stop -m fast >&2 || true
    fi
    rm -rf "$DATA"
    exit 0
fi

if [ "$(id -u)" = 0 ] && ! id "$OS_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$OS_USER"
fi
mkdir -p "$DATA"
chmod 700 "$DATA"
if [ "$(id -u)" = 0 ]; then
    chown "$OS_USER" "$DATA"
fi
if [ ! -f "$DATA/PG_VERSION" ]; then
    as_server_user "$PG_BIN/initdb" -D "$DATA" -U "$DB_USER" --auth=trust -E UTF8 --no-instructions >&2
fi
if ! as_server_user "$PG_BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    as_server_user "$PG_BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DATA -c max_connections=100" start >&2
fi
exists=$("$PSQL" -h 127.0.0.1 -p "$PORT" -U "$DB_USER" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$DB'")
if [ "$exists" != 1 ]; then
    "$PSQL" -h 127.0.0.1 -p "$PORT" -U "$DB_USER" -d postgres -qc "CREATE DATABASE $DB" >&2
fi
echo "postgresql+psycopg2://$DB_USER@127.0.0.1:$PORT/$DB"
