"""System-level proofs: the roles as separate processes on private data stores (fault suite, load test),
and the process helpers (processes.py) the tests and benchmarks share."""
