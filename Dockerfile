# syntax=docker/dockerfile:1
# One image for every role (web, limiter, worker, beat): the container command picks the role,
# exactly as in the Procfile. Built by deploy/minikube.sh with a tag from git (never `latest`).

# --- Stage 1: build every dependency into a virtualenv (compilers live only here) -----------
FROM python:3.11.14-slim-trixie AS builder

# gcc and libpq-dev are only needed if a wheel is missing for this platform; they never reach
# the final image. Versions come from the pinned Debian release of the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends build-essential libpq-dev \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
# requirements.lock (from requirements.txt by `make lock`): every package, pinned, with its hashes.
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock

# --- Stage 2: the runtime image: no compilers, no build headers, a non-root user ------------
FROM python:3.11.14-slim-trixie AS runtime

# postgresql-client: pg_dump / pg_restore for `manage.py backup` and `restore`.
# Trixie ships PostgreSQL 17, the major version of the minikube database (pg_dump must not be older).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends postgresql-client libpq5 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BIND_HOST=0.0.0.0 \
    WEB_PORT=8000 \
    LIMITER_PORT=8001 \
    BACKUP_DIR=/var/backups/endpointstats \
    RUN_DIR=/tmp

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root . /app

# Static files and bytecode are made at build time: the root filesystem is read-only at run time.
# collectstatic needs no database; the key only satisfies settings for this one command.
RUN DJANGO_SECRET_KEY=collectstatic-only-not-a-secret python manage.py collectstatic --no-input --verbosity 0 \
    && python -m compileall -q /app /opt/venv \
    && mkdir -p /var/backups/endpointstats \
    && chown 10001:10001 /var/backups/endpointstats

USER 10001:10001
EXPOSE 8000 8001 8002

# The web role by default; Kubernetes and the Procfile name the command of each role explicitly.
CMD ["gunicorn", "--config", "python:endpointstats.gunicorn_web"]
