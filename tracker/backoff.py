"""Back-off after a failed call to a dependency (Redis), shared by the event buffer and the limiter."""

import time


class Backoff:
    """After a failure, skip the dependency for `seconds`: a dead Redis then costs requests nothing
    instead of a connection attempt each. Per process; a race between threads costs at most one
    extra attempt, so no lock."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._retry_at = 0.0

    def ready(self) -> bool:
        """Whether to try the dependency now."""
        return time.monotonic() >= self._retry_at

    def failed(self) -> None:
        """The dependency just failed: skip it for the next `seconds`."""
        self._retry_at = time.monotonic() + self.seconds

    def reset(self) -> None:
        """Try again on the next call (tests, and after an operator fixed the dependency)."""
        self._retry_at = 0.0
