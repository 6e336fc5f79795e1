"""The one settings module for every role (web, limiter, worker, beat).

Everything that differs between a laptop and a cluster comes from environment
variables. With no DATABASE_URL / REDIS_URL the product runs on an embedded
default: SQLite, an in-process cache and Celery tasks run inline.
"""

import os
import socket
import warnings
from pathlib import Path
from typing import Any

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from endpointstats import logs, paths

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str | None = None) -> str:
    """Read a setting from the environment; a required one (no default) stops startup if missing."""
    value = os.environ.get(name, default)
    if value is None:
        raise ImproperlyConfigured(f"Set the {name} environment variable.")
    return value


def env_secret(name: str, default: str | None = None) -> str:
    """A secret: the content of the file named by `<name>_FILE` when that is set (a mounted Secret),
    else the variable itself. A missing or empty file stops start-up with a message naming it."""
    file_name = os.environ.get(f"{name}_FILE", "")
    if not file_name:
        return env(name, default)
    try:
        value = Path(file_name).read_text().strip()
    except OSError as error:
        raise ImproperlyConfigured(f"{name}_FILE={file_name}: cannot read it ({error.strerror}).") from None
    if not value:
        raise ImproperlyConfigured(f"{name}_FILE={file_name} is empty.")
    return value


def env_bool(name: str, default: bool) -> bool:
    value = env(name, "true" if default else "false").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}.")


def env_int(name: str, default: int) -> int:
    value = env(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}.") from None


def env_float(name: str, default: float) -> float:
    value = env(name, str(default))
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}.") from None


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


# --- Role -------------------------------------------------------------------
# The same code runs as web, limiter, worker or beat; the role picks the URLconf.
ROLE = env("ROLE", "web")
ROLES = {"web", "limiter", "worker", "beat"}
if ROLE not in ROLES:
    raise ImproperlyConfigured(f"ROLE must be one of {sorted(ROLES)}, not {ROLE!r}.")
POD_NAME = env("POD_NAME", socket.gethostname())

# --- Core Django ------------------------------------------------------------
DEBUG = env_bool("DJANGO_DEBUG", False)
if DEBUG:
    SECRET_KEY = env_secret("DJANGO_SECRET_KEY", "insecure-development-key-do-not-use-in-production")
else:
    SECRET_KEY = env_secret("DJANGO_SECRET_KEY", "")
    if not SECRET_KEY:
        raise ImproperlyConfigured(
            "Set the DJANGO_SECRET_KEY environment variable (any long random string) or DJANGO_SECRET_KEY_FILE "
            "(a file holding it), or set DJANGO_DEBUG=true for local development. "
            "`make superuser` and scripts/manage.sh use the key `make run` uses."
        )
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# --- HTTPS ------------------------------------------------------------------
# Off by default (make run is plain HTTP); the prod overlay turns them on and `manage.py check
# --deploy` passes with its settings (deploy/tests/test_security_settings.py). TLS ends at the Ingress.
# The header the proxy sets, e.g. X-Forwarded-Proto: only behind a proxy that overwrites it.
_PROXY_SSL_HEADER = env("DJANGO_SECURE_PROXY_SSL_HEADER", "").strip()
if _PROXY_SSL_HEADER:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _PROXY_SSL_HEADER.upper().replace("-", "_"), "https")
# The limiter is cluster-internal plain HTTP (no Ingress): it never redirects.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False) and ROLE != "limiter"
# Probes and Prometheus come by pod IP over plain HTTP (regexes on the path without its leading /).
SECURE_REDIRECT_EXEMPT = env_list("DJANGO_SECURE_REDIRECT_EXEMPT", "^health,^metrics")
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", False)
if ROLE == "limiter":
    SILENCED_SYSTEM_CHECKS = ["security.W008"]  # see SECURE_SSL_REDIRECT
# Messages live in the session (server side), never in a cookie: a new API token is one of them.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

INSTALLED_APPS = [
    "console.apps.ConsoleAdminConfig",  # django.contrib.admin, with the console's site as admin.site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "tracker",
    "ratelimit.apps.RatelimitConfig",  # app label "limits" (django-ratelimit owns "ratelimit")
    "analytics",
    "console.apps.ConsoleConfig",  # the ops console in the admin; above the other apps (imports them)
]

# Prometheus request metrics (off: a benchmark of what they cost; /metrics still serves the rest).
REQUEST_METRICS_ENABLED = env_bool("REQUEST_METRICS_ENABLED", True)
MIDDLEWARE = [
    # Outermost: every line logged for a request, and its response, carry its X-Request-ID.
    "endpointstats.logs.RequestIdMiddleware",
    # Outermost but one, so its timing covers everything below it (endpointstats_http_* metrics).
    "endpointstats.middleware.RequestMetricsMiddleware",
    # Outermost of our own so its timing covers everything below it.
    "tracker.middleware.RequestTrackingMiddleware",
    # Right after tracking, so that its 429s are tracked too; it decides in process_view (needs the route).
    "ratelimit.middleware.RateLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.common.CommonMiddleware",
    # ADMIN_MIDDLEWARE, for ADMIN_PATHS only: the API paths skip it.
    "endpointstats.middleware.AdminMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
if not REQUEST_METRICS_ENABLED:
    MIDDLEWARE.remove("endpointstats.middleware.RequestMetricsMiddleware")
# What only the admin needs, run by AdminMiddleware for paths under ADMIN_PATHS (in this order).
ADMIN_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ADMIN_PATH = env("ADMIN_PATH", "admin").strip("/") + "/"  # where the admin is served, e.g. "ops/"
ADMIN_PATHS = env_list("ADMIN_PATHS", f"/{ADMIN_PATH}")
# These checks look for the admin's middleware in MIDDLEWARE; endpointstats.E001 (and W016, as
# security.W016) check ADMIN_MIDDLEWARE instead (endpointstats/middleware.py).
SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E409", "admin.E410", "security.W003"]

ROOT_URLCONF = f"endpointstats.urls.{'limiter' if ROLE == 'limiter' else 'web'}"
WSGI_APPLICATION = "endpointstats.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "endpointstats" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Data stores ------------------------------------------------------------
DATABASE_URL = env_secret("DATABASE_URL", "")
EMBEDDED = not DATABASE_URL
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL or f"sqlite:///{env('SQLITE_PATH', str(BASE_DIR / 'db.sqlite3'))}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    # A stuck database must not hang a request forever.
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env_int("DB_CONNECT_TIMEOUT", 3)
else:
    # Several processes write to one SQLite file (web, limiter, beat): WAL lets readers go on, and
    # IMMEDIATE transactions wait for the write lock up front instead of failing half-way.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_secret("REDIS_URL", "")
# REDIS_URL names one node of a Redis Cluster (cache, rate-limit counters and event buffer run on
# the cluster; see endpointstats/redis_cluster.py). Celery cannot use a cluster: set CELERY_BROKER_URL.
REDIS_CLUSTER = env_bool("REDIS_CLUSTER", False)
# Short socket timeouts: when Redis is gone the hot path falls back fast instead of hanging.
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 0.5)
CACHES: dict[str, dict[str, Any]]
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env("CACHE_KEY_PREFIX", "es"),
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": REDIS_SOCKET_TIMEOUT,
                "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            },
        }
    }
    if REDIS_CLUSTER:
        CACHES["default"]["OPTIONS"] |= {
            "CONNECTION_FACTORY": "endpointstats.redis_cluster.ClusterConnectionFactory",
            "CLIENT_CLASS": "endpointstats.redis_cluster.ClusterClient",
        }
else:
    # Embedded: one SQLite file shared by every process (rate-limit counters exact across workers
    # and the limiter, cached stats, the backup lock); needs no server.
    CACHES = {
        "default": {
            "BACKEND": "endpointstats.sqlite_cache.SQLiteCache",
            "LOCATION": env("CACHE_SQLITE_PATH", str(paths.run_dir() / "cache.sqlite3")),
            "KEY_PREFIX": env("CACHE_KEY_PREFIX", "es"),
        }
    }

# --- Celery -----------------------------------------------------------------
CELERY_BROKER_URL = env_secret("CELERY_BROKER_URL", REDIS_URL or "memory://")
if REDIS_CLUSTER and CELERY_BROKER_URL == REDIS_URL:
    raise ImproperlyConfigured(
        "Celery cannot use Redis Cluster as its broker: set CELERY_BROKER_URL to a standalone Redis (or RabbitMQ)."
    )
# kombu's Redis transport plus one fix (endpointstats/broker.py): without it a worker exits when Redis
# dies while a task runs. CELERY_BROKER_TRANSPORT=redis selects the stock transport.
CELERY_BROKER_TRANSPORT = (
    env(
        "CELERY_BROKER_TRANSPORT",
        "endpointstats.broker:Transport" if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else "",
    )
    or None
)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# Embedded default: no broker process, so tasks run inline in the caller.
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(paths.beat_schedule_file())  # beat's bookkeeping, per checkout
# How often the running hour's rollups advance (the beat entry below; a float: tests run it sub-second).
ANALYTICS_LIVE_AGGREGATION_SECONDS = env_float("ANALYTICS_LIVE_AGGREGATION_SECONDS", 60)
# The beat schedule lives here and only here; beat runs as a singleton role.
CELERY_BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "drain-events": {  # keeps buffered events flowing into PostgreSQL
        "task": "tracker.tasks.drain_events_task",
        "schedule": env_float("DRAIN_INTERVAL_SECONDS", 1.0),
        "options": {"expires": 10},
    },
    # Analytics (every task is idempotent or locked, so a duplicate run is harmless).
    "analytics-aggregate-recent-hours": {  # re-aggregates the last ANALYTICS_REAGGREGATE_HOURS hours
        "task": "analytics.tasks.aggregate_recent_hours_task",
        "schedule": crontab(minute=5),
        "options": {"expires": 3000},
    },
    "analytics-aggregate-live": {  # the running hour, so queries read few raw events
        "task": "analytics.tasks.aggregate_live_task",
        "schedule": ANALYTICS_LIVE_AGGREGATION_SECONDS,
        "options": {"expires": 50},
    },
    "tracker-create-event-partitions": {  # AccessEvent day partitions, TRACKING_PARTITION_DAYS_AHEAD ahead
        "task": "tracker.tasks.create_event_partitions_task",
        "schedule": crontab(minute=20),
        "options": {"expires": 3000},
    },
    "analytics-prune-events": {
        "task": "analytics.tasks.prune_events_task",
        "schedule": crontab(hour=3, minute=30),
        "options": {"expires": 6 * 3600},
    },
    "analytics-backup-database": {
        "task": "analytics.tasks.backup_database_task",
        "schedule": crontab(hour=2, minute=15),
        "options": {"expires": 6 * 3600},
    },
}

if not REDIS_URL:
    # Embedded: events are stored directly (no buffer to drain) and beat runs each task itself.
    del CELERY_BEAT_SCHEDULE["drain-events"]

# --- Admin (the ops console) -----------------------------------------------
# The admin login, limited per client address and per username (django-ratelimit rates).
ADMIN_LOGIN_RATE_PER_CLIENT = env("ADMIN_LOGIN_RATE_PER_CLIENT", "20/10m")
ADMIN_LOGIN_RATE_PER_USERNAME = env("ADMIN_LOGIN_RATE_PER_USERNAME", "10/10m")
# The admin, the API docs and static files are not API traffic: not tracked, not API rate-limited.
_NOT_API_PATHS = f"/{ADMIN_PATH},/api/docs/,/api/schema/,/static/"

# --- Tracking ---------------------------------------------------------------
# The web role tracks what it serves; the limiter answers other services and tracks nothing by default.
TRACKING_ENABLED = env_bool("TRACKING_ENABLED", ROLE == "web")
# Paths (prefixes) and user-agent prefixes that are served but not tracked.
TRACKING_IGNORE_PATHS = env_list("TRACKING_IGNORE_PATHS", f"/health,/metrics,{_NOT_API_PATHS}")
TRACKING_IGNORE_USER_AGENTS = env_list("TRACKING_IGNORE_USER_AGENTS", "kube-probe/,Prometheus/")
# Distinct endpoints kept; more are counted under TRACKING_OVERFLOW_ENDPOINT.
TRACKING_MAX_ENDPOINTS = env_int("TRACKING_MAX_ENDPOINTS", 500)
TRACKING_OVERFLOW_ENDPOINT = "<other>"
# PostgreSQL: AccessEvent day partitions are created this many days ahead (hourly beat task).
TRACKING_PARTITION_DAYS_AHEAD = env_int("TRACKING_PARTITION_DAYS_AHEAD", 7)
TRACKING_UNMATCHED_ENDPOINT = "<unmatched>"
TRACKING_USER_AGENT_MAX_LENGTH = 256
# Larger batches spread the per-batch costs (claim, commit) thinner: 20000 ran ~25% faster than
# 5000 in bench_drain; the claim holds Redis for a few ms per batch, which bounds it.
DRAIN_BATCH_SIZE = env_int("DRAIN_BATCH_SIZE", 20000)
DRAIN_TIME_BUDGET_SECONDS = env_float("DRAIN_TIME_BUDGET_SECONDS", 20)
# The buffer: this many Redis streams (each web process writes to one; drains run in parallel, one per shard).
BUFFER_SHARDS = env_int("BUFFER_SHARDS", 4)
if BUFFER_SHARDS < 1:
    raise ImproperlyConfigured("BUFFER_SHARDS must be at least 1.")
# A shard's drain lock lives this long past its last batch; events a dead drain read are taken over
# by another drain once unacknowledged for DRAIN_CLAIM_IDLE_SECONDS (longer than any batch takes).
DRAIN_LOCK_SECONDS = env_float("DRAIN_LOCK_SECONDS", 15)
DRAIN_CLAIM_IDLE_SECONDS = env_float("DRAIN_CLAIM_IDLE_SECONDS", 30)
STATS_CACHE_SECONDS = env_int("STATS_CACHE_SECONDS", 5)
# Each process keeps the greeting and /stats this long in front of Redis (never past Redis's own
# entry): a drain's clearing of /stats reaches other processes within this time.
LOCAL_CACHE_SECONDS = env_float("LOCAL_CACHE_SECONDS", 1.0)
# Proxies in front of the app that append to X-Forwarded-For (0: trust REMOTE_ADDR only).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)

# --- Rate limiting ----------------------------------------------------------
# Rules: a JSON object from RATE_LIMITS_FILE (a ConfigMap mounted as a directory; re-read
# when it changes) or else the RATE_LIMITS variable; unset, the reference defaults apply.
RATE_LIMITS_FILE = env("RATE_LIMITS_FILE", "")
RATE_LIMITS = env("RATE_LIMITS", "")
RATE_LIMITS_RELOAD_SECONDS = env_float("RATE_LIMITS_RELOAD_SECONDS", 1)  # at most one stat() per interval
# Redis unreachable: let requests through (true, as the reference) or refuse them with 503.
# django-ratelimit reads the same name for its own (narrower) failure case.
RATELIMIT_FAIL_OPEN = env_bool("RATELIMIT_FAIL_OPEN", True)
RATELIMIT_SHADOW = env_bool("RATELIMIT_SHADOW", False)  # dry run everywhere: count, never refuse
RATELIMIT_EXEMPT_PATHS = env_list("RATELIMIT_EXEMPT_PATHS", f"/health,/metrics,{_NOT_API_PATHS}")  # path prefixes
# Clients are counted per address (IPv4 /32) or per network (IPv6 /64: a host usually owns one);
# django-ratelimit reads the same names.
RATELIMIT_IPV4_MASK = env_int("RATELIMIT_IPV4_MASK", 32)
RATELIMIT_IPV6_MASK = env_int("RATELIMIT_IPV6_MASK", 64)

# The limiter's /check counts on web's counters, so only callers holding this shared token may
# use it (`Authorization: Bearer <token>`). Several tokens (comma- or newline-separated) allow a
# rotation without downtime. None set: /check refuses every call with a 503 saying so.
LIMITER_TOKENS = [t.strip() for t in env_secret("LIMITER_TOKEN", "").replace("\n", ",").split(",") if t.strip()]

# --- Analytics --------------------------------------------------------------
ANALYTICS_COLLECT_MAX_EVENTS = env_int("ANALYTICS_COLLECT_MAX_EVENTS", 1000)  # events per POST /collect
ANALYTICS_COLLECT_MAX_BYTES = env_int("ANALYTICS_COLLECT_MAX_BYTES", 1024 * 1024)  # larger bodies get a 413
ANALYTICS_RETENTION_DAYS = env_int("ANALYTICS_RETENTION_DAYS", 30)  # raw events; rollups are kept
# New endpoint names one /collect token may introduce, so that no one client fills TRACKING_MAX_ENDPOINTS.
ANALYTICS_COLLECT_NEW_ENDPOINTS_PER_TOKEN = env_int("ANALYTICS_COLLECT_NEW_ENDPOINTS_PER_TOKEN", 50)
# Points (buckets x endpoints) one /analytics/timeseries answer may hold; more is a 400 saying so.
ANALYTICS_MAX_POINTS = env_int("ANALYTICS_MAX_POINTS", 10000)
# Rows per page of /analytics/stats and /analytics/geo (limit/offset): the default, and the most a limit may ask.
ANALYTICS_PAGE_SIZE = env_int("ANALYTICS_PAGE_SIZE", 100)
ANALYTICS_MAX_PAGE_SIZE = env_int("ANALYTICS_MAX_PAGE_SIZE", 500)
ANALYTICS_PRUNE_BATCH_SIZE = env_int("ANALYTICS_PRUNE_BATCH_SIZE", 10000)
ANALYTICS_REAGGREGATE_HOURS = env_int("ANALYTICS_REAGGREGATE_HOURS", 3)  # late events are picked up this long
# The running hour is aggregated every ANALYTICS_LIVE_AGGREGATION_SECONDS (above, with the beat
# schedule) up to this long ago (drain lag).
ANALYTICS_LIVE_LAG_SECONDS = env_int("ANALYTICS_LIVE_LAG_SECONDS", 30)
ANALYTICS_CACHE_SECONDS = env_int("ANALYTICS_CACHE_SECONDS", 3600)  # merged complete hours, invalidated on change
# What is stored of a client address: none (as is), truncate (IPv4 /24, IPv6 /48) or hash (keyed).
ANALYTICS_CLIENT_IP_PRIVACY = env("ANALYTICS_CLIENT_IP_PRIVACY", "none")
if ANALYTICS_CLIENT_IP_PRIVACY not in {"none", "truncate", "hash"}:
    raise ImproperlyConfigured("ANALYTICS_CLIENT_IP_PRIVACY must be none, truncate or hash.")
ANALYTICS_CLIENT_IP_HASH_KEY = env_secret("ANALYTICS_CLIENT_IP_HASH_KEY", SECRET_KEY)
GEOIP_PATH = env("GEOIP_PATH", "")  # a MaxMind country .mmdb (or its folder); empty: the bundled iptocc data
GEOIP_COUNTRY = env("GEOIP_COUNTRY", "GeoLite2-Country.mmdb")  # the file read when GEOIP_PATH is a folder
BACKUP_DIR = Path(env("BACKUP_DIR", str(BASE_DIR / "backups")))
BACKUP_KEEP = env_int("BACKUP_KEEP", 7)  # newest backups kept

# --- Celery task time limits -------------------------------------------------
# Soft: SoftTimeLimitExceeded is raised inside the task (transactions roll back, a partial backup is
# removed); hard: the pool process is killed and replaced. Every task is idempotent or locked, so a
# run cut off loses nothing: the next scheduled run redoes it. Sized from measurements (docs/RELIABILITY.md):
# a drain stops claiming after its budget and one batch of 20000 takes ~0.7 s (the idempotent path a
# few s); an hour of 1,000,000 events aggregates in ~5 s; pruning 1,000,000 events ~10 s; pg_dump of
# the 3.8 GB table of 30 days x 10M events takes minutes. Limits are about 10x the measured worst case.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300)  # any task without its own below
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360)
TASK_TIME_LIMITS = {  # task: (soft, hard) seconds
    "tracker.tasks.drain_events_task": (10, 20),  # sends one drain_shard_task per shard: milliseconds
    "tracker.tasks.drain_shard_task": (DRAIN_TIME_BUDGET_SECONDS + 20, DRAIN_TIME_BUDGET_SECONDS + 40),
    "analytics.tasks.aggregate_live_task": (120, 180),  # runs every minute: two hours of raw events at most
    "analytics.tasks.aggregate_recent_hours_task": (600, 720),  # ANALYTICS_REAGGREGATE_HOURS hours
    "analytics.tasks.prune_events_task": (1800, 1920),  # a day of events, 10000 rows per batch
    "analytics.tasks.backup_database_task": (3600, 3900),
    # Up to 9 empty day partitions (milliseconds each; each lock waited for at most 2 s).
    "tracker.tasks.create_event_partitions_task": (60, 90),
}
CELERY_TASK_ANNOTATIONS = {
    name: {"soft_time_limit": soft, "time_limit": hard} for name, (soft, hard) in TASK_TIME_LIMITS.items()
}

# --- API --------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "tracker.api.schema.ErrorsAutoSchema",  # lists every refusal
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "endpointstats.errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Endpoint Stats API",
    "DESCRIPTION": "Tracks every request to an API, keeps per-endpoint statistics and rate-limits clients.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc from drf-spectacular-sidecar's files in STATIC_ROOT: no CDN, works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Static files, i18n, logging -------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"  # filled by collectstatic (make run, the image build)
warnings.filterwarnings("ignore", message="No directory at")
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Off-site backup copies: any S3-compatible object storage (AWS S3, MinIO, Ceph, R2...). Without
# credentials here, boto3's own chain applies (e.g. a workload identity).
BACKUP_S3_BUCKET = env("BACKUP_S3_BUCKET", "")
if BACKUP_S3_BUCKET:
    STORAGES["backups"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": BACKUP_S3_BUCKET,
            "location": env("BACKUP_S3_PREFIX", "endpointstats/backups"),
            "endpoint_url": env("BACKUP_S3_ENDPOINT_URL", "") or None,
            "region_name": env("BACKUP_S3_REGION", "") or None,
            "access_key": env_secret("BACKUP_S3_ACCESS_KEY_ID", "") or None,
            "secret_key": env_secret("BACKUP_S3_SECRET_ACCESS_KEY", "") or None,
            "default_acl": None,  # the bucket's policy decides; never public
            "file_overwrite": False,  # a name is never reused: an existing copy is never replaced
        },
    }
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# prometheus_client opens a file there for the first metric any role defines: a missing folder (a fresh
# emptyDir path, a typo, /tmp cleaned) would crash the process at import time, so it is created here.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
# LOG_FORMAT=json (the manifests set it): one JSON object per line with role, pod and request id.
LOG_FORMAT = env("LOG_FORMAT", "plain")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}.")
LOGGING = logs.logging_config(log_format=LOG_FORMAT, level=env("LOG_LEVEL", "INFO"))
# Celery logs through the same handlers (JSON too) instead of installing its own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
