#!/usr/bin/env bash
# A private PostgreSQL server for the tests: a fresh cluster in a temporary folder owned by the postgres user,
# listening on 127.0.0.1 only (and a socket in that folder), trusted local logins, no password.
#   Scripts/postgres-test-server.sh start   prints its URL (postgres://postgres@127.0.0.1:PORT/postgres)
#   Scripts/postgres-test-server.sh stop    stops it and removes its folder
#   Scripts/postgres-test-server.sh url     prints the URL of the running one
#   Scripts/postgres-test-server.sh down    stops it, keeping its folder (for a test of PostgreSQL going away)
#   Scripts/postgres-test-server.sh up      starts it again after `down`, on the same port and data
# KEEL_PG_PORT=N picks the port (default: a free one). The folder is recorded in $KEEL_PG_STATE
# (default /tmp/keel-postgres-test.path), so `stop` finds what `start` made.
# Needs Debian's postgresql package (PostgreSQL 15); as root it runs the server as the postgres user, which
# PostgreSQL requires.
set -euo pipefail
record="${KEEL_PG_STATE:-/tmp/keel-postgres-test.path}"
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# The server daemonises and keeps every descriptor it inherits: a caller's pipe (a test's child process output, read
# to its end while another test restarts the server through system(3)) would never reach its end. Only 0-2 (and
# bash's own 255, the script it reads) are kept.
for fd in /proc/$$/fd/*; do
  fd="${fd##*/}"
  case "$fd" in 0|1|2|255|*[!0-9]*) ;; *) eval "exec $fd>&-" 2>/dev/null || true ;; esac
done

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

case "${1:-}" in
  start)
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
      echo "postgres-test-server.sh: no PostgreSQL server found under /usr/lib/postgresql (apt-get install postgresql)" >&2
      exit 1
    fi
    if [ -f "$record" ] && [ -d "$(cut -d' ' -f1 "$record")" ]; then
      echo "postgres-test-server.sh: one is already running ($(cat "$record")); stop it first" >&2
      exit 1
    fi
    dir="$(mktemp -d /tmp/keel-postgres.XXXXXX)"
    port="${KEEL_PG_PORT:-$(free_port)}"
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$dir"; fi
    as_postgres "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || {
      echo "postgres-test-server.sh: initdb failed (log: $dir/initdb.log)" >&2; exit 1; }
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start </dev/null >/dev/null 2>&1 || {
      echo "postgres-test-server.sh: the server did not start (log: $dir/server.log)" >&2; exit 1; }
    echo "$dir $port" >"$record"
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    [ -f "$record" ] || exit 0
    read -r dir _ <"$record"
    if [ -d "$dir/data" ]; then as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true; fi
    rm -rf "$dir" "$record"
    ;;
  restart)
    read -r dir _ <"$record"
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w restart </dev/null >/dev/null 2>&1
    ;;
  down)
    read -r dir _ <"$record"
    as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w stop </dev/null >/dev/null 2>&1
    ;;
  up)
    read -r dir port <"$record"
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start </dev/null >/dev/null 2>&1
    ;;
  url)
    read -r _ port <"$record"
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  *)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 64
    ;;
esac
