# shellcheck shell=bash
# Sourced by run.sh and manage.sh: the data stores, secret key and run folder `make run` uses, so a
# management command in a new shell sees exactly what the running roles see.
PY=.venv/bin/python

eval "$($PY scripts/local_services.py endpointstats 0)"
[[ "${EMBEDDED:-}" =~ ^(|0|false)$ ]] || why_embedded="asked for with EMBEDDED=${EMBEDDED}"
# The checkout's own key (created by `make run`), read through DJANGO_SECRET_KEY_FILE.
if [[ -z "${DJANGO_SECRET_KEY:-}" && -z "${DJANGO_SECRET_KEY_FILE:-}" ]]; then
  [[ -s .secret_key ]] || $PY -c "import secrets; print(secrets.token_urlsafe(50))" > .secret_key
  export DJANGO_SECRET_KEY_FILE="$PWD/.secret_key"
fi
# The limiter's /check token (Authorization: Bearer), the checkout's own, read through LIMITER_TOKEN_FILE.
if [[ -z "${LIMITER_TOKEN:-}" && -z "${LIMITER_TOKEN_FILE:-}" ]]; then
  [[ -s .limiter_token ]] || (umask 077 && $PY -c "import secrets; print(secrets.token_urlsafe(32))" > .limiter_token)
  export LIMITER_TOKEN_FILE="$PWD/.limiter_token"
fi
# Everything a running copy writes (metrics, beat schedule, heartbeats, the embedded cache) lives here.
export RUN_DIR="${RUN_DIR:-$PWD/.run}"
export why_embedded
