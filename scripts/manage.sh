#!/usr/bin/env bash
# manage.py with the settings `make run` uses (stores, secret key, run folder), from any shell:
#   scripts/manage.sh createsuperuser
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
exec "$PY" manage.py "$@"
