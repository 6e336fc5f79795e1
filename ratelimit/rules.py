"""Rate-limit rules: parsed and validated from RATE_LIMITS_FILE or RATE_LIMITS, reloaded when the file changes.

Format (a JSON object, endpoint -> rule; "default" applies to every endpoint not named):

    {"/": 100, "/stats": "60/m", "/export": "1000/h",
     "/search": {"rate": "100/m", "burst": "20/10s", "shadow": true},
     "default": 120}

A bare number is requests per minute (the reference format); a rate is "<count>/<unit>" or
"<count>/<n><unit>" with unit s, m, h or d (django-ratelimit's syntax). Entries that are not
configured keep the reference defaults (/ 100/min, /stats 60/min, /metrics 200/min, default 120/min).
"""

import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from tracker.hotsettings import snapshot

logger = logging.getLogger(__name__)

DEFAULT_KEY = "default"
REFERENCE_DEFAULTS = {"/": 100, "/stats": 60, "/metrics": 200, DEFAULT_KEY: 120}
MAX_LIMIT = 1_000_000_000
MAX_WINDOW_SECONDS = 31 * 86400
MAX_ENDPOINT_LENGTH = 200  # as tracked endpoint names
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE_RE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*")
_RULE_FIELDS = {"rate", "burst", "shadow"}
_RATE_HELP = 'a whole number of requests per minute, or a rate such as "10/s", "100/5m", "1000/h"'


class RulesError(ValueError):
    """The rules are unusable; the message names the source and the entry, and says what is wrong."""


@dataclass(frozen=True)
class Rate:
    limit: int
    window_seconds: int

    def __str__(self) -> str:
        for unit, seconds in _UNITS.items():
            if self.window_seconds == seconds:
                return f"{self.limit}/{unit}"
        return f"{self.limit}/{self.window_seconds}s"


@dataclass(frozen=True)
class Rule:
    """The limit for one endpoint (or the default): a main window, an optional burst window, a dry-run flag."""

    endpoint: str
    rate: Rate
    burst: Rate | None = None
    shadow: bool = False

    def policies(self) -> tuple[tuple[str, Rate], ...]:
        """The counters a request to this endpoint is counted in, by policy name."""
        if self.burst is None:
            return (("endpoint", self.rate),)
        return (("endpoint", self.rate), ("burst", self.burst))

    @cached_property  # set on every limited response: built once per rule, not per request
    def policy_header(self) -> str:
        """The RateLimit-Policy field (IETF draft-11): one item per counter, its quota and window."""
        return ", ".join(f'"{policy}";q={rate.limit};w={rate.window_seconds}' for policy, rate in self.policies())


@dataclass(frozen=True)
class RuleSet:
    """Rules in force: one per configured endpoint plus the default (always present)."""

    rules: Mapping[str, Rule]
    source: str
    loaded_at: object = field(default_factory=timezone.now, compare=False)

    def rule_for(self, endpoint: str) -> Rule:
        return self.rules.get(endpoint) or self.rules[DEFAULT_KEY]

    def has_own_rule(self, endpoint: str) -> bool:
        """Whether the endpoint has a rule of its own (not the default)."""
        return endpoint != DEFAULT_KEY and endpoint in self.rules


# --- Parsing ----------------------------------------------------------------------


def parse_rate(value: object, *, what: str) -> Rate:
    """A rate from a bare number (per minute) or a "<count>/<n><unit>" string; raises RulesError."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise RulesError(f"{what} must be {_RATE_HELP}, not {json.dumps(value)}")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int):
        limit, window = value, 60
    else:
        match = _RATE_RE.fullmatch(value)
        if match is None:
            raise RulesError(f"{what} must be {_RATE_HELP}, not {json.dumps(value)}")
        limit, multiple, unit = int(match.group(1)), match.group(2), match.group(3)
        window = _UNITS[unit] * (int(multiple) if multiple else 1)
    if not 1 <= limit <= MAX_LIMIT:
        raise RulesError(f"{what} must allow between 1 and {MAX_LIMIT} requests, not {limit}")
    if not 1 <= window <= MAX_WINDOW_SECONDS:
        raise RulesError(f"{what} must have a window between 1 second and 31 days, not {window} seconds")
    return Rate(limit=limit, window_seconds=window)


def parse_rule(endpoint: str, value: object) -> Rule:
    entry = f"entry {json.dumps(endpoint)}"
    if endpoint != DEFAULT_KEY and not endpoint.startswith("/"):
        raise RulesError(f'{entry}: a key must be "default" or an endpoint starting with "/", such as "/stats"')
    if len(endpoint) > MAX_ENDPOINT_LENGTH:
        raise RulesError(f"{entry}: an endpoint has at most {MAX_ENDPOINT_LENGTH} characters")
    if not isinstance(value, dict):
        return Rule(endpoint=endpoint, rate=parse_rate(value, what=entry))
    unknown = sorted(set(value) - _RULE_FIELDS)
    if unknown:
        raise RulesError(f"{entry}: unknown field(s) {', '.join(unknown)}; allowed are rate, burst and shadow")
    if "rate" not in value:
        raise RulesError(f'{entry}: an object needs "rate", e.g. {{"rate": "100/m", "burst": "20/10s"}}')
    rate = parse_rate(value["rate"], what=f"{entry}: rate")
    burst = None
    if value.get("burst") is not None:
        if not isinstance(value["burst"], str):
            raise RulesError(f'{entry}: burst must be a rate with its window, such as "20/10s"')
        burst = parse_rate(value["burst"], what=f"{entry}: burst")
        if burst.window_seconds >= rate.window_seconds:
            raise RulesError(f"{entry}: the burst window ({burst}) must be shorter than the rate's ({rate})")
        if burst.limit > rate.limit:
            raise RulesError(f"{entry}: the burst ({burst}) must not allow more requests than the rate ({rate})")
    shadow = value.get("shadow", False)
    if not isinstance(shadow, bool):
        raise RulesError(f"{entry}: shadow must be true or false, not {json.dumps(shadow)}")
    return Rule(endpoint=endpoint, rate=rate, burst=burst, shadow=shadow)


def parse_rules(data: object, *, source: str) -> RuleSet:
    """Validate a decoded JSON document; configured entries override the reference defaults.

    Raises RulesError naming the source and the first bad entry.
    """
    try:
        if not isinstance(data, dict):
            raise RulesError(f'must be a JSON object such as {{"/": 100, "default": 120}}, not {type(data).__name__}')
        merged = REFERENCE_DEFAULTS | data
        rules = {endpoint: parse_rule(endpoint, value) for endpoint, value in merged.items()}
    except RulesError as error:
        raise RulesError(f"{source}: {error}") from None
    return RuleSet(rules=MappingProxyType(rules), source=source)


def decode(text: str, *, source: str) -> RuleSet:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise RulesError(f"{source}: not valid JSON ({error})") from None
    return parse_rules(data, source=source)


def read_file(path: str) -> RuleSet:
    source = f"RATE_LIMITS_FILE {path}"
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise RulesError(f"{source}: cannot be read ({error})") from None
    return decode(text, source=source)


def load(*, path: str, raw: str | Mapping) -> RuleSet:
    """The rules from the file if one is configured, else from RATE_LIMITS, else the reference defaults."""
    if path:
        return read_file(path)
    if isinstance(raw, Mapping):  # settings may hold a dict (tests, or a settings override)
        return parse_rules(dict(raw), source="RATE_LIMITS")
    if raw.strip():
        return decode(raw, source="RATE_LIMITS")
    return parse_rules({}, source="reference defaults")


# --- The rules in force -----------------------------------------------------------


def _signature(path: str) -> tuple | None:
    """What changes when the file is replaced. os.stat follows symlinks, so the Kubernetes
    "..data" symlink swap of a directory-mounted ConfigMap shows up as a new inode."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)


class RulesStore:
    """The rules in force in this process, re-read when the rules file changes.

    The file is stat()ed at most once per `reload_seconds`; a changed file is parsed and, if
    valid, replaces the rules; if not, the last good rules stay and the reason is logged once
    (and shown as `last_error`). Thread-safe: one thread checks, the others use the rules in force.
    """

    def __init__(self, *, path: str, raw: str | Mapping, reload_seconds: float):
        self.path, self.raw, self.reload_seconds = path, raw, reload_seconds
        self._lock = threading.Lock()
        self._signature = _signature(path) if path else None
        self.rules = load(path=path, raw=raw)  # raises RulesError: no good rules to fall back on yet
        self.last_error: str | None = None
        self._next_check = time.monotonic() + reload_seconds

    def configured_by(self, *, path: str, raw: str | Mapping, reload_seconds: float) -> bool:
        return (self.path, self.raw, self.reload_seconds) == (path, raw, reload_seconds)

    def current(self, *, now: float | None = None) -> RuleSet:
        now = time.monotonic() if now is None else now
        if self.path and now >= self._next_check and self._lock.acquire(blocking=False):
            try:
                self._next_check = now + self.reload_seconds
                self._reload_if_changed()
            finally:
                self._lock.release()
        return self.rules

    def _reload_if_changed(self) -> None:
        signature = _signature(self.path)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            rules = read_file(self.path)
        except RulesError as error:
            self.last_error = str(error)
            logger.error("Rate limits NOT reloaded, keeping the rules loaded at %s: %s", self.rules.loaded_at, error)
            return
        self.rules, self.last_error = rules, None
        logger.info("Rate limits reloaded from %s: %s", self.path, describe(rules))


def describe(rules: RuleSet) -> str:
    return ", ".join(f"{name} {rule.rate}" for name, rule in rules.rules.items())


_store: RulesStore | None = None
_store_lock = threading.Lock()


@snapshot  # read on every decision
def _store_config() -> dict[str, Any]:
    return {
        "path": settings.RATE_LIMITS_FILE,
        "raw": settings.RATE_LIMITS,
        "reload_seconds": settings.RATE_LIMITS_RELOAD_SECONDS,
    }


def store() -> RulesStore:
    """The process's RulesStore for the current settings (rebuilt if RATE_LIMITS* settings change)."""
    global _store
    config = _store_config()
    current = _store
    if current is not None and current.configured_by(**config):
        return current
    with _store_lock:
        if _store is None or not _store.configured_by(**config):
            try:
                _store = RulesStore(**config)
            except RulesError as error:
                raise ImproperlyConfigured(f"Invalid rate limits. {error}") from None
        return _store


def current_rules() -> RuleSet:
    """The rules in force (a cheap call: the file is looked at no more than once a second)."""
    return store().current()


def load_at_startup() -> None:
    """Validate the rules when a process starts; raises ImproperlyConfigured naming the bad entry."""
    rules = store().rules
    logger.debug("Rate limits from %s: %s", rules.source, describe(rules))
