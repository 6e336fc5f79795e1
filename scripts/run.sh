#!/usr/bin/env bash
# make run: pick the data stores, migrate, then start every role in the foreground (Ctrl-C stops all).
# A role that dies is started again (scripts/supervise.py); the others keep serving.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
export WEB_PORT="${WEB_PORT:-8000}" LIMITER_PORT="${LIMITER_PORT:-8001}"
mkdir -p "$RUN_DIR"

if [[ -n "${DATABASE_URL:-}" ]]; then echo "Database: PostgreSQL (${DATABASE_URL})"; else echo "Database: embedded SQLite (${SQLITE_PATH:-db.sqlite3}) - ${why_embedded:-PostgreSQL not reachable on 127.0.0.1:5432}"; fi
if [[ -n "${REDIS_URL:-}" ]]; then
  echo "Cache, buffer, broker: Redis (${REDIS_URL})"
  processes="web limiter worker beat"
else
  echo "Cache and rate-limit counters: SQLite in ${RUN_DIR}; events stored directly; beat runs the schedule's tasks itself - ${why_embedded:-Redis not reachable on 127.0.0.1:6379}"
  processes="web limiter beat"
fi
echo "Run folder: ${RUN_DIR} (metrics, beat schedule, heartbeats, pids)"

$PY manage.py migrate --no-input
$PY manage.py collectstatic --no-input -v 0

cat <<MSG

  API         http://127.0.0.1:${WEB_PORT}/          (stats: /stats, health: /health, metrics: /metrics)
  API docs    http://127.0.0.1:${WEB_PORT}/api/docs/  (ReDoc: /api/redoc/)
  Admin       http://127.0.0.1:${WEB_PORT}/admin/     (create a user, from any shell: make superuser)
  Limiter     http://127.0.0.1:${LIMITER_PORT}/limits   (decide: curl -H "Authorization: Bearer \$(cat .limiter_token)" \\
                "http://127.0.0.1:${LIMITER_PORT}/check?endpoint=/stats&client_ip=127.0.0.1")

Starting ${processes} - a role that dies is restarted; Ctrl-C stops them all.
MSG
export PATH="$PWD/.venv/bin:$PATH"
# The Procfile's commands, each wrapped in the restarter; web and limiter get their own metrics
# folder (gunicorn wipes it at start) under PROMETHEUS_MULTIPROC_DIR if given, else RUN_DIR.
metrics_root="${PROMETHEUS_MULTIPROC_DIR:-$RUN_DIR}"
unset PROMETHEUS_MULTIPROC_DIR
while IFS= read -r line; do
  role="${line%%:*}" command="${line#*:}"
  case "$role" in web | limiter) prefix="PROMETHEUS_MULTIPROC_DIR=${metrics_root}/prometheus-${role} " ;; *) prefix="" ;; esac
  echo "${role}: ${prefix}python scripts/supervise.py ${role}${command}"
done < <(grep -E '^[a-z]+:' Procfile) > "$RUN_DIR/Procfile"
# shellcheck disable=SC2086
exec honcho --procfile "$RUN_DIR/Procfile" --app-root "$PWD" start $processes
