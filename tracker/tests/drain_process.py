"""A drain in a process of its own, for tests that run several at once and kill them with SIGKILL.

    python -m tracker.tests.drain_process      (configured by the environment like any role)

Drains every shard it can lock until the whole buffer is empty (nothing queued, nothing pending),
then exits 0. Shards held by another drain are left to it; events a killed drain left pending are
taken over once DRAIN_CLAIM_IDLE_SECONDS have passed.
"""

import os
import time

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "endpointstats.settings")
    django.setup()
    from tracker import buffer, services

    while True:
        result = services.drain_buffer()
        print(f"claimed={result.claimed} stored={result.stored}", flush=True)
        depth = buffer.depth()
        if depth["queued"] == 0 and depth["pending"] == 0:
            return
        if result.claimed == 0:
            time.sleep(0.05)  # every shard is held by another drain, or waits for its idle time


if __name__ == "__main__":
    main()
