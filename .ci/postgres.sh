#!/usr/bin/env bash
# A private PostgreSQL server for the tests: installs the distribution's
# package when it is missing (as root), makes a cluster in a folder of its
# own owned by a non-root user, starts it on a free port on 127.0.0.1 with
# password authentication, and prints the URL the tests read.
#
#   eval "$(.ci/postgres.sh start /tmp/ow-pg)"   # exports ORIGIN_WATCH_TEST_PG
#   .ci/postgres.sh stop /tmp/ow-pg
#
# By hand as root, the same: `start` once, `stop` when done. The tests'
# server trades durability for speed (fsync off); ORIGIN_WATCH_PG_DURABLE=1
# keeps PostgreSQL's defaults (for the benchmark).
set -euo pipefail

cmd="${1:?usage: postgres.sh start|stop DIR}"
dir="${2:?usage: postgres.sh start|stop DIR}"
user="${ORIGIN_WATCH_PG_USER:-postgres}"
password="ow-test-password"

log() { printf '%s\n' "$*" >&2; }

# Where the distribution puts each version's initdb and pg_ctl (they are
# not on PATH on Debian and Ubuntu).
pg_lib="${ORIGIN_WATCH_PG_LIB:-/usr/lib/postgresql}"

pg_bin() {
    local found
    found="$(ls -d "$pg_lib"/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
    if [[ -n "$found" && -x "$found/pg_ctl" ]]; then
        printf '%s\n' "$found"
    fi
}

# Runs a command as the cluster's user (it cannot be root).
as_user() {
    if [[ "$(id -u)" -eq 0 ]]; then
        runuser -u "$user" -- "$@"
    else
        "$@"
    fi
}

# Installs the distribution's PostgreSQL (Debian/Ubuntu: apt-get), as root
# or through a password-less sudo. The package's own cluster is not used.
install_postgres() {
    local sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            log "postgres.sh: PostgreSQL is not installed ($pg_lib/<version>/bin/pg_ctl), this is not root, and sudo -n is not available; install the distribution's postgresql package"
            exit 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "postgres.sh: PostgreSQL is not installed and there is no apt-get; install PostgreSQL (initdb, pg_ctl) under $pg_lib/<version>/bin or set ORIGIN_WATCH_PG_LIB"
        exit 1
    fi
    log "postgres.sh: installing PostgreSQL from the distribution's packages"
    # No questions (tzdata and the like) on a machine with no terminal.
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends postgresql >&2
}

start() {
    local bin
    bin="$(pg_bin)"
    if [[ -z "$bin" ]]; then
        install_postgres
        bin="$(pg_bin)"
        if [[ -z "$bin" ]]; then
            log "postgres.sh: PostgreSQL was installed but no $pg_lib/<version>/bin/pg_ctl was found"
            exit 1
        fi
    fi
    if [[ "$(id -u)" -eq 0 ]] && ! id "$user" >/dev/null 2>&1; then
        useradd --system --no-create-home "$user"
    fi
    rm -rf "$dir"
    mkdir -p "$dir/data" "$dir/sock"
    if [[ "$(id -u)" -eq 0 ]]; then
        chown -R "$user" "$dir"
        # initdb refuses root, so the cluster runs as $user, who must reach
        # the folder (not, say, under a 0700 home).
        if ! runuser -u "$user" -- test -w "$dir/data"; then
            log "postgres.sh: $user cannot write $dir/data (a parent folder is closed to it); use a folder under /tmp"
            exit 1
        fi
    fi
    printf '%s\n' "$password" >"$dir/pwfile"
    [[ "$(id -u)" -eq 0 ]] && chown "$user" "$dir/pwfile"
    as_user "$bin/initdb" -D "$dir/data" -U ow --pwfile="$dir/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 1; }
    local port started="" fast="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    [[ "${ORIGIN_WATCH_PG_DURABLE:-}" == 1 ]] && fast=""
    for _ in $(seq 1 20); do
        port=$((20000 + RANDOM % 20000))
        if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            continue
        fi
        if as_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c max_connections=300 $fast" \
            start >&2; then
            started=yes
            break
        fi
    done
    if [[ -z "$started" ]]; then
        log "postgres.sh: the server did not start; its log:"
        cat "$dir/server.log" >&2 || true
        exit 1
    fi
    as_user "$bin/createdb" -h "$dir/sock" -p "$port" -U ow ow >&2
    printf '%s\n' "$port" >"$dir/port"
    printf 'export ORIGIN_WATCH_TEST_PG=%q\n' "postgres://ow:$password@127.0.0.1:$port/ow?sslmode=disable"
}

stop() {
    local bin
    bin="$(pg_bin)"
    if [[ -n "$bin" && -f "$dir/data/postmaster.pid" ]]; then
        as_user "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >&2 || true
    fi
    rm -rf "$dir"
}

case "$cmd" in
start) start ;;
stop) stop ;;
*) log "usage: postgres.sh start|stop DIR"; exit 2 ;;
esac
