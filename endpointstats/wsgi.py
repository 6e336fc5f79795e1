"""WSGI entry point for the web and limiter roles (the ROLE variable picks the URLconf)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "endpointstats.settings")

application = get_wsgi_application()

from endpointstats.requestcycle import trim_request_housekeeping  # noqa: E402 - needs Django set up

trim_request_housekeeping()
