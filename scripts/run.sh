#!/usr/bin/env bash
# make run: pick the data stores, migrate, then start every role in the foreground (Ctrl-C stops all).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

eval "$($PY scripts/local_services.py endpointstats 0)"
[[ "${EMBEDDED:-}" =~ ^(|0|false)$ ]] || why_embedded="asked for with EMBEDDED=${EMBEDDED}"
export DJANGO_SECRET_KEY="${DJANGO_SECRET_KEY:-$(cat .secret_key)}"
export WEB_PORT="${WEB_PORT:-8000}" LIMITER_PORT="${LIMITER_PORT:-8001}"

if [[ -n "${DATABASE_URL:-}" ]]; then echo "Database: PostgreSQL (${DATABASE_URL})"; else echo "Database: embedded SQLite (db.sqlite3) - ${why_embedded:-PostgreSQL not reachable on 127.0.0.1:5432}"; fi
if [[ -n "${REDIS_URL:-}" ]]; then
  echo "Cache, buffer, broker: Redis (${REDIS_URL})"
  processes="web limiter worker beat"
else
  echo "Cache: in-process; events stored directly; tasks run inline - ${why_embedded:-Redis not reachable on 127.0.0.1:6379}"
  processes="web limiter"
fi

$PY manage.py migrate --no-input
$PY manage.py collectstatic --no-input -v 0

cat <<MSG

  API         http://127.0.0.1:${WEB_PORT}/          (stats: /stats, health: /health, metrics: /metrics)
  API docs    http://127.0.0.1:${WEB_PORT}/api/docs/
  Admin       http://127.0.0.1:${WEB_PORT}/admin/     (create a user: .venv/bin/python manage.py createsuperuser)
  Limiter     http://127.0.0.1:${LIMITER_PORT}/limits   (decide: /check?endpoint=/stats&client_ip=127.0.0.1)

Starting ${processes} - Ctrl-C stops them all.
MSG
export PATH="$PWD/.venv/bin:$PATH"
# shellcheck disable=SC2086
exec honcho start $processes
