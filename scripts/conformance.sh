#!/usr/bin/env bash
# Run the official RealWorld Postman collection against a freshly served Conduit.
#
#   scripts/conformance.sh [sqlite|postgres]
#
# sqlite (default): a new SQLite file in a temporary folder.
# postgres: a new database on $CONDUIT_CONFORMANCE_PG (default postgresql+asyncpg://postgres@127.0.0.1:5432/test),
#           created for this run and dropped afterwards. With $CONDUIT_CONFORMANCE_REDIS set, the
#           scaled-out configuration: cache, rate limits and pub/sub in Redis, jobs through a Celery
#           worker (`conduit worker`) started beside the server.
# newman is installed from npm into ./.tools (git-ignored) on first use.
set -euo pipefail

backend="${1:-sqlite}"
root="$(cd "$(dirname "$0")/.." && pwd)"
collection="${CONDUIT_REALWORLD_COLLECTION:-$root/../shared/realworld/Conduit.postman_collection.json}"
[ -f "$collection" ] || { echo "collection not found: $collection" >&2; exit 2; }
cd "$root"

if [ ! -x .tools/node_modules/.bin/newman ]; then
  mkdir -p .tools
  [ -f .tools/package.json ] || printf '{"name":"conduit-tools","private":true}\n' > .tools/package.json
  npm install --prefix .tools --no-audit --no-fund --silent newman@6
fi

workdir="$(mktemp -d)"
port="$(uv run --quiet python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export CONDUIT_VAR_DIR="$workdir/var" CONDUIT_ENV=test CONDUIT_LOG_LEVEL=WARNING
pg_admin_url=""
case "$backend" in
  sqlite) export CONDUIT_DATABASE_URL="sqlite+aiosqlite:///$workdir/var/conduit.db" ;;
  postgres)
    pg_admin_url="${CONDUIT_CONFORMANCE_PG:-postgresql+asyncpg://postgres@127.0.0.1:5432/test}"
    dbname="conduit_conformance_$(date +%s)_$$"
    uv run --quiet python -m scripts.pgdb create "$pg_admin_url" "$dbname"
    export CONDUIT_DATABASE_URL="${pg_admin_url%/*}/$dbname"
    if [ -n "${CONDUIT_CONFORMANCE_REDIS:-}" ]; then
      export CONDUIT_REDIS_URL="$CONDUIT_CONFORMANCE_REDIS"
      export CONDUIT_CACHE_PREFIX="$dbname" CONDUIT_RATE_LIMIT_PREFIX="$dbname" CONDUIT_TASK_QUEUE="$dbname"
    fi
    ;;
  *) echo "usage: $0 [sqlite|postgres]" >&2; exit 2 ;;
esac

server_pid=""
worker_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  [ -n "$worker_pid" ] && kill "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null || true
  [ -n "$pg_admin_url" ] && uv run --quiet python -m scripts.pgdb drop "$pg_admin_url" "$dbname" || true
  rm -rf "$workdir"
}
trap cleanup EXIT

uv run --quiet conduit serve --port "$port" >"$workdir/server.log" 2>&1 &
server_pid=$!
if [ -n "${CONDUIT_REDIS_URL:-}" ]; then
  CONDUIT_LOG_LEVEL=INFO uv run --quiet conduit worker --concurrency 2 >"$workdir/worker.log" 2>&1 &
  worker_pid=$!
fi
base="http://127.0.0.1:$port/api/v1"
for _ in $(seq 1 100); do
  curl -sf "$base/tags" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$workdir/server.log" >&2; exit 1; }
  sleep 0.2
done

run_id="$(date +%s)$RANDOM"
echo "RealWorld conformance on $backend at $base"
.tools/node_modules/.bin/newman run "$collection" \
  --global-var "APIURL=$base" \
  --global-var "USERNAME=conf$run_id" \
  --global-var "EMAIL=conf$run_id@example.com" \
  --global-var "PASSWORD=Conformance-pass-2026" \
  --reporters cli --color off

if [ -n "$worker_pid" ]; then
  # The collection publishes articles: each one's fan-out job must have run on the worker.
  for _ in $(seq 1 50); do
    grep -q "article_published.*succeeded" "$workdir/worker.log" && break
    sleep 0.2
  done
  grep -q "article_published.*succeeded" "$workdir/worker.log" || {
    echo "the Celery worker ran no job" >&2; cat "$workdir/worker.log" >&2; exit 1; }
  echo "Celery worker: $(grep -c "succeeded" "$workdir/worker.log") jobs succeeded"
fi
