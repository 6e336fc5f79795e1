"""gunicorn --config python:endpointstats.gunicorn_web : the web role."""

from endpointstats.gunicorn_common import child_exit, configure, on_starting, post_worker_init  # noqa: F401

globals().update(configure(role="web", port_variable="WEB_PORT", default_port=8000))
