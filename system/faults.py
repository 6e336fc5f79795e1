"""make faults: the roles as separate processes, one fault at a time, under steady traffic.

    python -m system.faults [--worker-kills 10] [--rate 40] [--json FILE]

Starts a private PostgreSQL and a private Redis (the manifest's persistence: AOF, fsync every second),
migrates, runs the Procfile's four roles, and sends steady traffic (a fixed rate on loopback, every
request and every collected event with a unique User-Agent). Then, one at a time:

  baseline                 no fault
  worker kill -9 x N       a backlog is built while the worker is down, the worker starts, and it is
                           killed (whole process group, SIGKILL) as soon as its first batch is committed
  Redis crash              SIGKILL, restarted 3 s later on the same port and data directory
  PostgreSQL stop          pg_ctl stop -m fast, started again 5 s later
  gunicorn worker kill -9  one of web's workers, three times (the master replaces it)
  beat stopped             SIGTERM, restarted after three live-aggregation intervals
  Redis crash, no persistence   the crash again, Redis coming back empty (what --appendonly no gives)

After each fault, with the traffic paused: every answered request and every accepted event is stored
exactly once (matched by User-Agent), events = counter sum = rollup sum, no 5xx other than documented
503s (JSON with Retry-After) or /health/ready, and the roles that were not the fault's target kept
their pid. A Redis crash may lose the events appended in the last second before it (appendfsync
everysec): the suite measures that loss and passes the row only if every lost event was answered
less than 2 s before the crash. The last row measures what a Redis without persistence loses.

Prints a table and exits 1 if a row failed. Nothing here imports the app: HTTP, SQL and redis-cli only.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in {None, ""}:  # python system/faults.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from system.client import create_token, post_collect, wait_for
from system.stack import REPO, Stack, children
from system.traffic import Ledger, Traffic

LIVE_SECONDS = 5
# The suite's only settings beyond the defaults: live aggregation every 5 s (so rollups can be checked
# after each fault instead of each minute), rate limits counted but not enforced (all traffic comes from
# 127.0.0.1), and drain batches of 5000 (a backlog of a few thousand events spans several batches).
SUITE_ENV = {
    "ANALYTICS_LIVE_AGGREGATION_SECONDS": str(LIVE_SECONDS),
    "ANALYTICS_LIVE_LAG_SECONDS": "2",
    "RATELIMIT_SHADOW": "true",
    "DRAIN_BATCH_SIZE": "5000",
    # A killed drain's unacknowledged batch is taken over after this long (Redis Streams buffer; 30 s by
    # default, 10 s is still far longer than a batch of 5000 takes).
    "DRAIN_CLAIM_IDLE_SECONDS": "10",
}
# How long the check waits without any new stored event before it calls the missing ones lost:
# longer than a killed drain's batch waits before it is taken over (lock, claim idle time).
QUIET_SECONDS = 45
BURST_REQUESTS, BURST_EVENTS = 15, 1000  # per worker-kill round: 3 drain batches of backlog
SERVICE_ROLES = ("web", "limiter", "worker", "beat")


@dataclass
class Outcome:
    fault: str
    detail: str = ""
    served: int = 0  # events that must be stored (answered requests + accepted collected events)
    stored: int = 0  # of those, stored
    events: int = 0  # rows in tracker_accessevent (all, including requests that got no answer)
    counters: int = 0
    rollups: int = 0
    duplicates: int = 0
    lost: int = 0
    phantom: int = 0  # stored events no request produced
    server_errors: int = 0  # 5xx other than documented 503s and /health/ready
    unavailable: int = 0  # JSON 503 with Retry-After (a dependency down)
    no_answer: int = 0  # connection refused/reset (may or may not be stored)
    roles: str = "ok"
    seconds: float = 0.0
    passed: bool = False
    problems: list[str] = field(default_factory=list)


class Suite:
    def __init__(self, stack: Stack, *, rate: float) -> None:
        self.stack = stack
        self.rate = rate
        self.token = create_token(stack, name="fault-suite")
        self.ledger = Ledger()
        self.run_tag = f"f{uuid.uuid4().hex[:6]}"
        self.excused: set[str] = set()  # events a documented guarantee does not cover (measured loss)
        self.outcomes: list[Outcome] = []
        self._phase = 0
        self.started_at = time.time()

    # --- traffic ---------------------------------------------------------------------------------

    def traffic(self) -> Traffic:
        self._phase += 1
        return Traffic(
            port=self.stack.web_port, token=self.token, ledger=self.ledger, tag=f"{self.run_tag}p{self._phase}",
            rate=self.rate,
        )  # fmt: skip

    def burst(self, tag: str) -> int:
        """BURST_REQUESTS x BURST_EVENTS collected events, 3 at a time; returns how many were accepted."""

        def send(i: int) -> int:
            agent = f"{tag}b{i}"
            reply = post_collect(self.stack.web_port, self.token, BURST_EVENTS, tag=agent)
            self.ledger.add_collect(reply, tag=agent, count=BURST_EVENTS)
            return BURST_EVENTS if reply.status == 201 else 0

        with ThreadPoolExecutor(max_workers=3) as pool:
            return sum(pool.map(send, range(BURST_REQUESTS)))

    def stored_events(self) -> int:
        return self.stack.sql("SELECT count(*) FROM tracker_accessevent")[0][0]

    def pids(self) -> dict[str, int]:
        return {name: role.pid for name, role in self.stack.roles.items()}

    # --- faults ----------------------------------------------------------------------------------

    def run(self, name: str, fault, *, targets: tuple[str, ...] = (), seconds_before: float = 4.0) -> Outcome:
        print(f"-- {name}", flush=True)
        started = time.monotonic()
        first = len(self.ledger.snapshot())
        pids = self.pids()
        outcome = Outcome(fault=name)
        with self.traffic():
            time.sleep(seconds_before)
            outcome.detail = fault(outcome) or ""
            time.sleep(3)
        self.check(outcome, first=first, pids=pids, targets=targets)
        outcome.seconds = round(time.monotonic() - started, 1)
        self.outcomes.append(outcome)
        print(f"   {'PASS' if outcome.passed else 'FAIL'} {outcome.detail} {'; '.join(outcome.problems)}", flush=True)
        return outcome

    def baseline(self, outcome: Outcome) -> str:
        time.sleep(6)
        return "steady traffic only"

    def kill_worker_mid_drain(self, rounds: int):
        def fault(outcome: Outcome) -> str:
            worker = self.stack.roles["worker"]
            mid_drain, pids = 0, set()
            worker.stop()
            for round_ in range(rounds):
                before = self.stored_events()
                t0 = time.monotonic()
                self.burst(f"{self.run_tag}k{round_}")
                t1 = time.monotonic()
                self.stack.start("worker")
                print(
                    f"   round {round_ + 1}: burst {t1 - t0:.1f} s, worker start {time.monotonic() - t1:.1f} s",
                    flush=True,
                )
                pids.add(worker.pid)
                # The worker is the only writer (Redis is up): any new row is a committed drain batch.
                committed = wait_for(lambda b=before: self.stored_events() > b, timeout=90, interval=0.05)
                worker.kill()
                at_kill = self.stored_events()
                if committed and at_kill < before + BURST_REQUESTS * BURST_EVENTS:
                    mid_drain += 1
            self.stack.start("worker")
            return f"{rounds} kills, {mid_drain} confirmed mid-drain (a batch committed, backlog left)"

        return fault

    def crash_redis(self, *, persistence: bool):
        def fault(outcome: Outcome) -> str:
            redis = self.stack.redis
            depth_before = redis.command("DBSIZE")
            crashed_at = time.monotonic()
            redis.kill()
            if not persistence:  # what a Redis without AOF or snapshots comes back as
                for path in redis.dir.iterdir():
                    if path.is_dir():
                        for inner in path.iterdir():
                            inner.unlink()
                        path.rmdir()
                    elif path.name != "redis.log":
                        path.unlink()
            time.sleep(3)
            redis.start()
            outcome.detail = f"down 3 s ({depth_before} keys before)"
            self._crashed_at = crashed_at
            return outcome.detail

        return fault

    def stop_postgres(self, outcome: Outcome) -> str:
        self.stack.postgres.stop()
        time.sleep(5)
        self.stack.postgres.start()
        return "pg_ctl stop -m fast, down 5 s"

    def kill_gunicorn_workers(self, outcome: Outcome) -> str:
        web = self.stack.roles["web"]
        killed = []
        for _ in range(3):
            workers = children(web.pid)
            if not workers:
                break
            os.kill(workers[0], signal.SIGKILL)
            killed.append(workers[0])
            wait_for(lambda w=workers[0]: w not in children(web.pid) and len(children(web.pid)) >= 2, timeout=30)
            time.sleep(1.5)
        return f"{len(killed)} web workers killed, {len(children(web.pid))} running after"

    def stop_beat(self, outcome: Outcome) -> str:
        self.stack.roles["beat"].stop()
        time.sleep(3 * LIVE_SECONDS)
        self.stack.start("beat")
        return f"stopped {3 * LIVE_SECONDS} s (live aggregation every {LIVE_SECONDS} s)"

    # --- checks ----------------------------------------------------------------------------------

    def reaggregate(self) -> None:
        """manage.py aggregate_hours --since <the stack's first hour>: the hourly task's service."""
        since = time.strftime("%Y-%m-%dT%H:00Z", time.gmtime(self.started_at - 3600))
        subprocess.run(
            [sys.executable, "manage.py", "aggregate_hours", "--since", since], cwd=REPO,
            env=self.stack.env_for("worker"), capture_output=True, timeout=600, check=True,
        )  # fmt: skip

    def stored_agents(self) -> dict[str, int]:
        return dict(self.stack.sql("SELECT user_agent, count(*) FROM tracker_accessevent GROUP BY user_agent"))

    def check(self, outcome: Outcome, *, first: int, pids: dict[str, int], targets: tuple[str, ...]) -> None:
        must, may = self.ledger.expected()
        must -= self.excused
        # Wait for the drain to catch up: until every expected event is stored, or nothing new has been
        # stored for QUIET_SECONDS (a loss then shows as lost events, not as a hang).
        last, still_since, deadline = -1, time.monotonic(), time.monotonic() + 240
        while time.monotonic() < deadline:
            agents = self.stored_agents()
            if must <= set(agents):
                break
            if len(agents) != last:
                last, still_since = len(agents), time.monotonic()
            elif time.monotonic() - still_since > QUIET_SECONDS:
                break
            time.sleep(1)
        stored = self.stored_agents()
        lost = must - set(stored)
        outcome.lost = len(lost)
        crashed_at = getattr(self, "_crashed_at", None)
        if lost and crashed_at is not None:
            # A Redis crash loses what was appended after the last fsync (appendfsync everysec: about 1 s);
            # without persistence, everything buffered. The loss is measured, then excused for later rows.
            answered = {}
            for record in self.ledger.snapshot():
                for agent in self.ledger.events_of(record):
                    answered[agent] = record.at
            older = {agent for agent in lost if crashed_at - answered.get(agent, 0) > 2.0}
            window = max((crashed_at - answered.get(agent, crashed_at) for agent in lost), default=0)
            outcome.detail += f"; lost {len(lost)} events answered up to {window:.1f} s before the crash"
            if older and "no persistence" not in outcome.fault:
                outcome.problems.append(f"{len(older)} lost events were answered more than 2 s before the crash")
            self.excused |= lost
            lost = set()
        self._crashed_at = None
        outcome.served = len(must)
        outcome.stored = len(must & set(stored))
        outcome.duplicates = sum(count - 1 for count in stored.values() if count > 1)
        outcome.phantom = len(set(stored) - must - may - self.excused)
        (outcome.events, *_), *_ = self.stack.sql("SELECT count(*) FROM tracker_accessevent")
        outcome.counters = int(self.stack.sql("SELECT coalesce(sum(access_count), 0) FROM tracker_endpointstat")[0][0])

        def rollups() -> int:
            return int(self.stack.sql("SELECT coalesce(sum(access_count), 0) FROM analytics_hourlystat")[0][0])

        wait_for(lambda: rollups() == outcome.events, timeout=6 * LIVE_SECONDS + 10, interval=1)
        outcome.rollups = rollups()
        if outcome.rollups != outcome.events:
            # Events drained after their hour was complete (a backlog across an hour boundary) are rolled
            # up by the hourly re-aggregation (minute 5, the last ANALYTICS_REAGGREGATE_HOURS hours), not by
            # the live task. Run what that task runs, then the sums must agree.
            late = outcome.events - outcome.rollups
            self.reaggregate()
            outcome.rollups = rollups()
            outcome.detail += f"; {late} late events rolled up by the hourly re-aggregation"

        records = self.ledger.snapshot()[first:]
        unexpected = []
        for record in records:
            if record.status == 0:
                outcome.no_answer += 1
            elif record.status == 503 and record.retry_after:
                outcome.unavailable += 1
            elif record.status >= 500 and record.path != "/health/ready":
                outcome.server_errors += 1
                unexpected.append(f"{record.status} {record.method} {record.path}")

        changed = [name for name, pid in pids.items() if name not in targets and self.stack.roles[name].pid != pid]
        dead = [name for name in SERVICE_ROLES if not self.stack.roles[name].alive()]
        outcome.roles = "ok" if not changed and not dead else f"restarted: {changed}, dead: {dead}"

        if lost:
            outcome.problems.append(f"{len(lost)} answered events not stored")
        for name, value in (("duplicates", outcome.duplicates), ("phantom events", outcome.phantom)):
            if value:
                outcome.problems.append(f"{value} {name}")
        if not (outcome.events == outcome.counters == outcome.rollups):
            outcome.problems.append("events, counters and rollups differ")
        if outcome.server_errors:
            outcome.problems.append(f"{outcome.server_errors} unexpected 5xx: {sorted(set(unexpected))}")
        if outcome.roles != "ok":
            outcome.problems.append(outcome.roles)
            for name in dead:  # as Kubernetes would; the row has failed already
                self.stack.start(name)
        outcome.passed = not outcome.problems


COLUMNS = [
    ("fault", 34), ("served", 7), ("stored", 7), ("lost", 5), ("dup", 4), ("events", 7), ("counters", 8),
    ("rollups", 7), ("5xx", 4), ("503", 4), ("no ans", 6), ("roles", 5), ("result", 6),
]  # fmt: skip


def table(outcomes: list[Outcome]) -> str:
    lines = [" | ".join(name.ljust(width) for name, width in COLUMNS)]
    lines.append("-|-".join("-" * width for _, width in COLUMNS))
    for o in outcomes:
        values = [o.fault, o.served, o.stored, o.lost, o.duplicates, o.events, o.counters, o.rollups,
                  o.server_errors, o.unavailable, o.no_answer, "ok" if o.roles == "ok" else "NO",
                  "PASS" if o.passed else "FAIL"]  # fmt: skip
        lines.append(" | ".join(str(v).ljust(width) for v, (_, width) in zip(values, COLUMNS, strict=True)))
    lines.append("")
    for o in outcomes:
        lines.append(f"{o.fault}: {o.detail} ({o.seconds} s){' -- ' + '; '.join(o.problems) if o.problems else ''}")
    return "\n".join(lines)


FAULTS = ("baseline", "worker", "redis", "postgres", "gunicorn", "beat", "redis-no-persistence")


def run_suite(*, worker_kills: int, rate: float, only: tuple[str, ...] = FAULTS) -> list[Outcome]:
    with Stack(env=SUITE_ENV) as stack:
        stack.start(*SERVICE_ROLES)
        suite = Suite(stack, rate=rate)
        steps = {
            "baseline": lambda: suite.run("baseline", suite.baseline),
            "worker": lambda: suite.run(
                f"worker kill -9 mid-drain x{worker_kills}", suite.kill_worker_mid_drain(worker_kills),
                targets=("worker",),
            ),
            "redis": lambda: suite.run("Redis crash (AOF everysec)", suite.crash_redis(persistence=True)),
            "postgres": lambda: suite.run("PostgreSQL stop and start", suite.stop_postgres),
            "gunicorn": lambda: suite.run("gunicorn web worker kill -9 x3", suite.kill_gunicorn_workers),
            "beat": lambda: suite.run("beat stopped 3 live windows", suite.stop_beat, targets=("beat",)),
            "redis-no-persistence": lambda: suite.run(
                "Redis crash, no persistence", suite.crash_redis(persistence=False)
            ),
        }  # fmt: skip
        for name in FAULTS:
            if name in only:
                steps[name]()
        return suite.outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker-kills", type=int, default=10)
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second of steady traffic")
    parser.add_argument("--json", type=Path, help="also write the outcomes here")
    parser.add_argument("--only", nargs="+", choices=FAULTS, default=FAULTS, help="run these faults only")
    args = parser.parse_args()
    started = time.monotonic()
    outcomes = run_suite(worker_kills=args.worker_kills, rate=args.rate, only=tuple(args.only))
    print()
    print(table(outcomes))
    print(f"\n{sum(o.passed for o in outcomes)}/{len(outcomes)} faults passed in {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
