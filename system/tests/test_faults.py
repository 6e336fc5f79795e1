"""The fault suite, shortened (one worker kill instead of ten): `make faults` runs the full one."""

from system.faults import run_suite, table


def test_every_fault_is_survived_with_nothing_lost_or_counted_twice():
    outcomes = run_suite(worker_kills=1, rate=25)
    print(table(outcomes))

    assert [(o.fault, o.problems) for o in outcomes if not o.passed] == []
    assert {o.fault for o in outcomes} >= {"baseline", "Redis crash (AOF everysec)", "PostgreSQL stop and start"}
