"""Keep one role of `make run` running: start it again, with back-off, when it exits on its own.

honcho stops every role as soon as one exits; wrapped in this, a role that dies (a crash, an OOM
kill, `kill -9`) is restarted while the others keep serving. SIGINT/SIGTERM (Ctrl-C, honcho
stopping) end the loop and are passed on to the role. The role stays in this process's group, so
honcho's signals (SIGTERM, then SIGKILL after 5 s) reach it as before. On Linux this process is a
child subreaper: what a killed role leaves behind (gunicorn workers still holding the port, Celery
pool processes) is reparented here and killed before the role starts again.
`<RUN_DIR>/<role>.pid` holds the role's current pid.

    python scripts/supervise.py web gunicorn --config python:endpointstats.gunicorn_web
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

FIRST_DELAY, MAX_DELAY = 1.0, 30.0
HEALTHY_AFTER = 60.0  # a role that ran this long starts again after FIRST_DELAY, not the last back-off


def main() -> int:
    role, command = sys.argv[1], sys.argv[2:]
    pid_file = Path(os.environ.get("RUN_DIR") or Path(__file__).resolve().parent.parent / ".run") / f"{role}.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    state: dict = {"stopping": False, "child": None}

    def stop(signum, frame) -> None:
        state["stopping"] = True
        child = state["child"]
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    become_subreaper()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    delay, code = FIRST_DELAY, 0
    while not state["stopping"]:
        started = time.monotonic()
        state["child"] = child = subprocess.Popen(command)
        pid_file.write_text(f"{child.pid}\n")
        code = child.wait()
        kill_leftovers()
        if state["stopping"]:
            break
        if time.monotonic() - started > HEALTHY_AFTER:
            delay = FIRST_DELAY
        print(f"supervise: {role} exited with code {code}; restarting in {delay:g} s", file=sys.stderr, flush=True)
        deadline = time.monotonic() + delay
        while not state["stopping"] and time.monotonic() < deadline:
            time.sleep(0.1)
        delay = min(delay * 2, MAX_DELAY)
    pid_file.unlink(missing_ok=True)
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code


def become_subreaper() -> None:
    """prctl(PR_SET_CHILD_SUBREAPER): orphans of the role become our children (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def kill_leftovers() -> None:
    """SIGKILL and reap every remaining child (the role itself has been reaped already)."""
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if stat.read_text().rsplit(")", 1)[1].split()[1] == me:
                os.kill(int(stat.parent.name), signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG) != (0, 0):
            pass


if __name__ == "__main__":
    sys.exit(main())
