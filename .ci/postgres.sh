#!/usr/bin/env bash
# Install (Debian packages), start and prepare a PostgreSQL server for the distributed-tuning tests.
#
#   export SB3_PPO_VARIANTS_POSTGRES_URL="$(bash .ci/postgres.sh)"
#
# - stdout is exactly one line, the URL (postgresql://USER:PASSWORD@127.0.0.1:PORT/DB); progress goes to stderr;
# - the server listens on 127.0.0.1 only; role and database are created if missing;
# - idempotent: safe to run again on a machine where PostgreSQL is already installed and/or running
#   (apt-get runs only when the `postgresql` package is missing; a running cluster is left running);
# - needs root (or sudo), no stdin (DEBIAN_FRONTEND=noninteractive), works without systemd (containers).
#
# Settings (environment): SB3_PPO_VARIANTS_PG_PORT (5432), SB3_PPO_VARIANTS_PG_USER / _PASSWORD / _DB (optuna),
# SB3_PPO_VARIANTS_PG_CLUSTER (main). These are for a throw-away test server: do not reuse the password elsewhere.
set -euo pipefail

PORT="${SB3_PPO_VARIANTS_PG_PORT:-5432}"
DB_USER="${SB3_PPO_VARIANTS_PG_USER:-optuna}"
DB_PASSWORD="${SB3_PPO_VARIANTS_PG_PASSWORD:-optuna}"
DB_NAME="${SB3_PPO_VARIANTS_PG_DB:-optuna}"
CLUSTER="${SB3_PPO_VARIANTS_PG_CLUSTER:-main}"

log() { echo "postgres.sh: $*" >&2; }

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo -n)
else
  log "must run as root (or with passwordless sudo)"
  exit 1
fi

# 1. install from Debian's packages (skipped when already installed)
if ! dpkg-query -W -f='${Status}' postgresql 2>/dev/null | grep -q "install ok installed"; then
  log "installing postgresql from the Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq >&2
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends postgresql >&2
fi

# 2. a cluster of the newest installed major version (the package usually creates "main"; create it otherwise)
VERSION="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -n 1)"
if [ -z "$VERSION" ]; then
  log "no server binaries under /usr/lib/postgresql"
  exit 1
fi
if ! pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c {found = 1} END {exit !found}'; then
  log "creating cluster $VERSION/$CLUSTER"
  "${SUDO[@]}" pg_createcluster "$VERSION" "$CLUSTER" --port "$PORT" >&2
fi

# 3. listen on 127.0.0.1 only, on PORT: a drop-in of conf.d (read last, so it wins over postgresql.conf);
#    restart only when this changes a running server's settings
CONF_DIR="/etc/postgresql/$VERSION/$CLUSTER"
DROP_IN="$CONF_DIR/conf.d/sb3_ppo_variants.conf"
WANTED="$(printf "# written by sb3_ppo_variants .ci/postgres.sh\nlisten_addresses = '127.0.0.1'\nport = %s\n" "$PORT")"
changed=0
if [ "$(cat "$DROP_IN" 2>/dev/null || true)" != "$WANTED" ]; then
  "${SUDO[@]}" mkdir -p "$CONF_DIR/conf.d"
  printf '%s\n' "$WANTED" | "${SUDO[@]}" tee "$DROP_IN" >/dev/null
  changed=1
fi
if [ "$(pg_conftool -s "$VERSION" "$CLUSTER" show port 2>/dev/null || true)" != "$PORT" ]; then
  # also in postgresql.conf, so that pg_lsclusters / pg_ctlcluster report the right port
  "${SUDO[@]}" pg_conftool "$VERSION" "$CLUSTER" set port "$PORT" >&2
  changed=1
fi

status="$(pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c {print $4}')"
if [ "$status" = "online" ] && [ "$changed" -eq 1 ]; then
  log "restarting $VERSION/$CLUSTER (settings changed)"
  "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$VERSION" "$CLUSTER" restart >&2
elif [ "$status" != "online" ]; then
  log "starting $VERSION/$CLUSTER on 127.0.0.1:$PORT"
  "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$VERSION" "$CLUSTER" start >&2
fi

for _ in $(seq 1 60); do
  if pg_isready -q -h 127.0.0.1 -p "$PORT"; then
    break
  fi
  sleep 0.5
done
if ! pg_isready -q -h 127.0.0.1 -p "$PORT"; then
  log "server not ready on 127.0.0.1:$PORT; see /var/log/postgresql/postgresql-$VERSION-$CLUSTER.log"
  exit 1
fi

# 4. role and database for the tests (created if missing; the password is (re)set every time)
psql_admin() { "${SUDO[@]}" runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" "$@"; }
if [ "$(id -u)" -ne 0 ]; then
  psql_admin() { sudo -n -u postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" "$@"; }
fi
psql_admin -v user="$DB_USER" -v password="$DB_PASSWORD" >&2 <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'user') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'user', :'password') \gexec
SQL
psql_admin -v user="$DB_USER" -v db="$DB_NAME" >&2 <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL

URL="postgresql://$DB_USER:$DB_PASSWORD@127.0.0.1:$PORT/$DB_NAME"
# check the URL itself (TCP + password), as the tests will use it
if ! PGPASSWORD="$DB_PASSWORD" psql -X -q -h 127.0.0.1 -p "$PORT" -U "$DB_USER" -d "$DB_NAME" -c "SELECT 1" >/dev/null; then
  log "cannot connect with $URL"
  exit 1
fi
log "ready: export SB3_PPO_VARIANTS_POSTGRES_URL=$URL"
echo "$URL"
