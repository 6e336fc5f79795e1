"""Steady, bounded traffic against a stack's web role, with a ledger of what each request proves.

Every request carries a unique User-Agent, and every event sent to /collect a unique user_agent,
so the ledger can say, per request, whether its event must be stored (an HTTP answer was given),
may be stored (no answer: the connection broke), and the database can be checked event by event.
"""

import itertools
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from system.client import Reply, collect_body, request

# path, weight: a mix of cached, database-backed, analytics, unmatched and collected traffic.
MIX = [
    ("GET /", 40),
    ("GET /stats", 15),
    ("GET /analytics/stats", 10),
    ("GET /analytics/timeseries?period=1h&interval=5m", 5),
    ("GET /nowhere", 5),
    ("POST /collect", 10),
    ("GET /health/ready", 5),  # not tracked; 503 while the database is down, by design
]
COLLECT_EVENTS = 5
UNTRACKED = ("/health", "/metrics")


@dataclass
class Record:
    at: float  # monotonic time the answer came (or the connection broke)
    method: str
    path: str
    status: int
    retry_after: bool
    user_agent: str
    collected: int  # events sent in the body (POST /collect)


@dataclass
class Ledger:
    """What the traffic proved: events that must be stored, events that may be, and the statuses."""

    records: list[Record] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: Record) -> None:
        with self.lock:
            self.records.append(record)

    def add_collect(self, reply: Reply, *, tag: str, count: int) -> None:
        self.add(Record(time.monotonic(), "POST", "/collect", reply.status, "Retry-After" in reply.headers, tag, count))

    def snapshot(self) -> list[Record]:
        with self.lock:
            return list(self.records)

    @staticmethod
    def events_of(record: Record) -> list[str]:
        """The user agents of the events this request produced if it was served."""
        if record.path.startswith(UNTRACKED):
            return []
        agents = [record.user_agent]
        if record.path == "/collect" and (record.status == 201 or record.status == 0):
            agents += [f"{record.user_agent}-{i}" for i in range(record.collected)]
        return agents

    def expected(self) -> tuple[set[str], set[str]]:
        """(must be stored: answered requests and accepted events, may be stored: requests without an answer)."""
        must, may = set(), set()
        for record in self.snapshot():
            (may if record.status == 0 else must).update(self.events_of(record))
        return must, may


class Traffic:
    """`rate` requests per second over `threads` threads, on new connections, until stop()."""

    def __init__(self, *, port: int, token: str, ledger: Ledger, tag: str, rate: float = 40, threads: int = 8):
        self.port, self.token, self.ledger, self.tag, self.rate = port, token, ledger, tag, rate
        self._stop = threading.Event()
        self._sequence = itertools.count()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self._start = 0.0
        self._random = random.Random(7)  # the same mix on every run
        self._choices = [entry for entry, weight in MIX for _ in range(weight)]
        self._lock = threading.Lock()

    def __enter__(self) -> "Traffic":
        self._start = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                n = next(self._sequence)
                entry = self._random.choice(self._choices)
            due = self._start + n / self.rate
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            method, path = entry.split(" ", 1)
            agent = f"{self.tag}-{n}"
            if method == "POST":
                body = collect_body(COLLECT_EVENTS, tag=agent)
                headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
                reply = request(self.port, method, path, body=body, headers=headers | {"User-Agent": agent})
                collected = COLLECT_EVENTS
            else:
                reply = request(self.port, method, path, headers={"User-Agent": agent})
                collected = 0
            self.ledger.add(
                Record(time.monotonic(), method, path.split("?")[0], reply.status, "Retry-After" in reply.headers,
                       agent, collected)
            )  # fmt: skip


def statuses(records: list[Record]) -> Counter:
    return Counter((record.path, record.status) for record in records)
