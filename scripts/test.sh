#!/usr/bin/env bash
# The test command: lint, then the whole suite against SQLite and against PostgreSQL, with a real Redis,
# real Celery workers, real gunicorn and headless Chromium. A missing service fails the run; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
export PATH="$PWD/$VENV/bin:$PATH"

redis_url=${BOUNCER_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}
pg_url=${BOUNCER_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}

"$PY" - "$redis_url" <<'PY' || { echo "FAIL: no Redis at $redis_url (start one: see README, Testing)"; exit 1; }
import sys, redis
redis.Redis.from_url(sys.argv[1], socket_connect_timeout=3).ping()
PY
"$PY" - "$pg_url" <<'PY' || { echo "FAIL: no PostgreSQL at $pg_url (start one: see README, Testing)"; exit 1; }
import sys, psycopg
psycopg.connect(sys.argv[1], connect_timeout=3).close()
PY
[ -x /usr/bin/chromium ] || { echo "FAIL: /usr/bin/chromium is missing (apt-get install chromium)"; exit 1; }

echo "== lint"
ruff check .
ruff format --check .
mypy

echo "== tests on SQLite"
BOUNCER_TEST_REDIS_URL="$redis_url" "$PY" -m pytest -q -p no:cacheprovider "$@"
echo "== tests on PostgreSQL"
BOUNCER_TEST_REDIS_URL="$redis_url" BOUNCER_TEST_DATABASE_URL="$pg_url" "$PY" -m pytest -q -p no:cacheprovider "$@"
