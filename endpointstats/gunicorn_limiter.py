"""gunicorn --config python:endpointstats.gunicorn_limiter : the limiter role."""

from endpointstats.gunicorn_common import child_exit, configure, on_starting, post_worker_init  # noqa: F401

globals().update(configure(role="limiter", port_variable="LIMITER_PORT", default_port=8001))
