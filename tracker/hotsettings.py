"""Settings the request path reads on every request, copied out as plain attributes.

`django.conf.settings` is a LazyObject: every attribute read runs Django's Python-level
`__getattribute__` (~0.3 µs, ten times a plain attribute), and a tracked, limited request read
~20 of them (docs/PERFORMANCE.md). A snapshot is built on first use and rebuilt after any setting
changes: `override_settings` and pytest-django's `settings` fixture send `setting_changed`.
"""

import functools
from collections.abc import Callable
from typing import TypeVar

from django.core.signals import setting_changed

T = TypeVar("T")


def snapshot(build: Callable[[], T]) -> Callable[[], T]:
    """`build()`, called once and again after a setting changes; for settings read per request."""
    cached = functools.cache(build)

    def forget(**kwargs: object) -> None:
        cached.cache_clear()

    setting_changed.connect(forget, weak=False, dispatch_uid=f"hotsettings:{build.__module__}.{build.__qualname__}")
    return cached
