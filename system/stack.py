"""The product as it runs in a cluster, on one machine: private data stores and the Procfile's roles.

- PrivatePostgres: initdb into a temp dir and pg_ctl on a spare loopback port (as the `postgres`
  OS user when run as root: PostgreSQL refuses to run as root).
- PrivateRedis: redis-server on a spare loopback port with the persistence the Kubernetes manifest
  gives Redis (read from deploy/kustomize/overlays/minikube/datastores.yaml: AOF, fsync every second).
- Role: one line of the Procfile, run as is, in its own process group (RUN_DIR, the folder of
  schedules and metrics files, is the stack's temp dir: two stacks on one machine share nothing).

Never the machine's shared PostgreSQL or Redis: every port is chosen at run time and every file
lives in a temp dir removed by Stack.close().
"""

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from system.processes import free_port

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PROCFILE = REPO / "Procfile"
DATASTORES = REPO / "deploy/kustomize/overlays/minikube/datastores.yaml"


class StackError(Exception):
    """A process of the stack could not start (its log's tail is in the message)."""


def wait_until(condition, *, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_get(url: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback http only)
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def rss_kib(pid: int) -> int:
    """Resident memory of one process (0 once it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    """Direct children of a process (gunicorn's workers, Celery's pool processes)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return sorted(found)


# --- PostgreSQL ---------------------------------------------------------------------------------


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    raise StackError("PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin")


class PrivatePostgres:
    """A PostgreSQL cluster of our own: initdb into a temp dir, pg_ctl on a spare loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.bin = _postgres_bin()
        self.port = free_port()
        self.dir = workdir / "postgres"
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.dir.mkdir()
        # PostgreSQL will not run as root: as root, everything runs as the postgres OS user.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            user = pwd.getpwnam("postgres")
            for path in (workdir, self.dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/endpointstats"

    def _run(self, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=timeout, cwd=self.dir, check=False
        )
        if result.returncode != 0:
            raise StackError(f"{args[0]} failed: {result.stderr.strip()}\n{_tail(self.log)}")

    def initdb(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"
        )
        self.start()
        self._run(
            str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q",
            "-c", "CREATE DATABASE endpointstats",
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir}"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self) -> None:
        """A clean, fast stop (what an operator or a rolling update of the database does)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        if self.running():
            with contextlib.suppress(StackError, subprocess.TimeoutExpired):
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")


# --- Redis --------------------------------------------------------------------------------------


def manifest_redis_arguments() -> list[str]:
    """redis-server's arguments in the Kubernetes manifest, minus the password and the data dir."""
    for document in yaml.safe_load_all(DATASTORES.read_text()):
        if not document or document.get("kind") != "StatefulSet":
            continue
        for container in document["spec"]["template"]["spec"]["containers"]:
            command = container.get("command") or []
            if command and command[0] == "redis-server":
                args, skip = [], False
                for index, arg in enumerate(command[1:], start=1):
                    if skip:
                        skip = False
                        continue
                    if arg in {"--requirepass", "--dir"}:
                        skip = True
                        continue
                    args.append(arg)
                    del index
                return args
    raise StackError(f"no redis-server command in {DATASTORES}")


class PrivateRedis:
    """redis-server of our own, configured like the manifest's; kill() and start() keep its data dir."""

    def __init__(self, workdir: Path, *, persistence: bool = True) -> None:
        self.port = free_port()
        self.dir = workdir / "redis"
        self.dir.mkdir()
        self.log = self.dir / "redis.log"
        if persistence:
            self.arguments = manifest_redis_arguments()
        else:  # what tracker/tests/processes.py and most dev machines run
            self.arguments = ["--save", "", "--appendonly", "no"]
        self.process: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [*command, *self.arguments], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(lambda: self.ping(), timeout=30, what=f"redis on {self.port}")

    def ping(self) -> bool:
        return self.command("PING") == "PONG"

    def command(self, *args: str) -> str:
        """One command through redis-cli (no client library state to reset across restarts)."""
        result = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10)
        return result.stdout.strip().strip('"') if result.returncode == 0 else ""

    def info(self, section: str) -> dict[str, str]:
        text = subprocess.run(
            ["redis-cli", "-p", str(self.port), "INFO", section], capture_output=True, text=True, timeout=10
        ).stdout
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed beyond what appendfsync already wrote."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def close(self) -> None:
        self.kill()


# --- The roles ----------------------------------------------------------------------------------


def procfile() -> dict[str, list[str]]:
    commands = {}
    for line in PROCFILE.read_text().splitlines():
        if ":" in line and not line.lstrip().startswith("#"):
            name, command = line.split(":", 1)
            commands[name.strip()] = shlex.split(command)
    return commands


class Role:
    """One Procfile role as its own process group; its output is appended to <workdir>/<name>.log."""

    def __init__(self, name: str, *, workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.workdir = workdir
        self.log = workdir / f"{name}.log"
        self.command = procfile()[name]
        self.env = env
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        with self.log.open("a") as log:
            log.write(f"\n=== start {self.starts + 1}: {' '.join(self.command)}\n")
            log.flush()
            self.process = subprocess.Popen(
                self.command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signum)

    def kill(self) -> None:
        """kill -9 of the whole role (the container dying): main process and its children."""
        self.signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (what Kubernetes sends), SIGKILL after timeout."""
        if not self.alive():
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        # A pool child orphaned by its parent's death must not outlive the role.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def rss_kib(self) -> int:
        """Resident memory of the role: main process plus its children (workers, pool)."""
        if not self.alive():
            return 0
        return rss_kib(self.pid) + sum(rss_kib(child) for child in children(self.pid))

    def log_since_start(self) -> str:
        """The output of the current (last) start only."""
        return self.log.read_text(errors="replace").rsplit("\n=== start", 1)[-1]

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log, lines)


class Stack:
    """Private PostgreSQL and Redis, migrated, and any of the Procfile's roles on them.

    Use as a context manager; everything started is stopped and the temp dir removed on exit.
    `env` adds settings to every role (e.g. a shorter live-aggregation interval).
    """

    def __init__(self, *, env: dict[str, str] | None = None, redis_persistence: bool = True) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="es-stack-"))
        self.extra_env = env or {}
        self.redis_persistence = redis_persistence
        self.postgres: PrivatePostgres | None = None
        self.redis: PrivateRedis | None = None
        self.roles: dict[str, Role] = {}
        self.web_port = free_port()
        self.limiter_port = free_port()
        self.worker_metrics_port = free_port()

    def __enter__(self) -> "Stack":
        (self.workdir / "run").mkdir()
        try:
            self.postgres = PrivatePostgres(self.workdir)
            self.postgres.initdb()
            self.redis = PrivateRedis(self.workdir, persistence=self.redis_persistence)
            self.redis.start()
            migrated = subprocess.run(
                [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
                cwd=REPO, env=self.env_for("web"), capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            if migrated.returncode != 0:
                raise StackError(f"migrate failed:\n{migrated.stderr[-3000:]}")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def env_for(self, name: str) -> dict[str, str]:
        inherited = {
            key: value
            for key, value in os.environ.items()
            if key not in {"DATABASE_URL", "REDIS_URL", "CACHE_KEY_PREFIX", "PROMETHEUS_MULTIPROC_DIR", "ROLE"}
            and not key.startswith(("CELERY_", "WORKER_", "DJANGO_", "PYTEST", "WEB_", "LIMITER_"))
        }
        env = inherited | {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "DATABASE_URL": self.postgres.url,
            "REDIS_URL": self.redis.url if self.redis else "",
            "DJANGO_SECRET_KEY": "system-test-only-secret-key",
            "BIND_HOST": "127.0.0.1",
            "WEB_PORT": str(self.web_port),
            "LIMITER_PORT": str(self.limiter_port),
            "POD_NAME": f"{name}-0",
            "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / f"prometheus-{name}"),
            "CELERY_HEARTBEAT_FILE": str(self.workdir / f"{name}.heartbeat"),
            "BACKUP_DIR": str(self.workdir / "backups"),
            "RUN_DIR": str(self.workdir / "run"),  # beat's schedule and the rest of a running copy's files
        }
        if name in {"worker", "beat"}:
            env["ROLE"] = name
        if name == "worker":
            env["WORKER_METRICS_PORT"] = str(self.worker_metrics_port)
        return env | self.extra_env

    def start(self, *names: str, timeout: float = 60) -> None:
        """Start roles (again, after a stop or kill) and wait until each is ready."""
        for name in names:
            if name in self.roles and self.roles[name].alive():
                continue
            role = self.roles.get(name) or Role(name, workdir=self.workdir, env=self.env_for(name))
            Path(role.env["CELERY_HEARTBEAT_FILE"]).unlink(missing_ok=True)
            self.roles[name] = role
            role.start()
        for name in names:
            self.wait_ready(name, timeout=timeout)

    def wait_ready(self, name: str, *, timeout: float = 60) -> None:
        role = self.roles[name]

        def ready() -> bool:
            if not role.alive():
                raise StackError(f"{name} exited with {role.process.returncode}:\n{role.log_tail()}")
            if name in {"web", "limiter"}:
                port = self.web_port if name == "web" else self.limiter_port
                with contextlib.suppress(OSError):
                    return http_get(f"http://127.0.0.1:{port}/health/live", timeout=2)[0] == 200
                return False
            return Path(role.env["CELERY_HEARTBEAT_FILE"]).exists()

        try:
            wait_until(ready, timeout=timeout, what=f"the {name} role")
        except StackError as error:
            raise StackError(f"{error}\n{role.log_tail()}") from None

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def limiter(self) -> str:
        return f"http://127.0.0.1:{self.limiter_port}"

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        """One query on the private database (a fresh connection: it may have restarted)."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.postgres.port, user="postgres", dbname="endpointstats")
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(query, params)
                return cursor.fetchall() if cursor.description else []
        finally:
            conn.close()

    def close(self) -> None:
        for role in self.roles.values():
            with contextlib.suppress(Exception):
                role.stop(timeout=20)
        if self.redis is not None:
            self.redis.close()
        if self.postgres is not None:
            self.postgres.close()
        if os.environ.get("KEEP_STACK_DIR"):
            print(f"stack files kept in {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
