from django.apps import AppConfig


class RatelimitConfig(AppConfig):
    name = "ratelimit"
    # Not "ratelimit": that is django-ratelimit's own app label (we use only its core, but the two
    # could never both be installed). The app has no models, so no table or permission is named after it.
    label = "limits"
    verbose_name = "Rate limiting"

    def ready(self) -> None:
        # Bad rules stop start-up (ImproperlyConfigured names the entry) instead of surfacing
        # on the first request.
        from ratelimit import rules

        rules.load_at_startup()
