"""System-level proofs: the roles as separate processes on private data stores (fault suite, load test)."""
