from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class ConsoleConfig(AppConfig):
    """The ops console: overview, drill-down and operations in the admin. Sits above tracker,
    ratelimit and analytics (it imports them; none of them imports it)."""

    name = "console"
    default_auto_field = "django.db.models.BigAutoField"


class ConsoleAdminConfig(AdminConfig):
    """django.contrib.admin with the console's site as the default `admin.site` (Django's
    documented way to override the default site), so every app's registrations land on it."""

    default_site = "console.sites.ConsoleAdminSite"
