from django.apps import AppConfig


class RatelimitConfig(AppConfig):
    name = "ratelimit"
    verbose_name = "Rate limiting"

    def ready(self) -> None:
        # Bad rules stop start-up (ImproperlyConfigured names the entry) instead of surfacing
        # on the first request. Note: django_ratelimit's own app is not installed (its label
        # is also "ratelimit"); only its core is used.
        from ratelimit import rules

        rules.load_at_startup()
