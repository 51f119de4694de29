"""`imtext serve`: a local Prefect server, the imtext work pool and deployments, and a worker.

The server and the worker run as child processes, each in its own process group, so that Ctrl-C
(or SIGTERM) reaches this process alone and it can stop them in order: the worker first (it ends
its flow runs), then the server. Anything a child left behind is killed, so no process outlives
`imtext serve`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flows.deployments import PREFECT_FILE, Registered
from flows.prefect_api import prefect_home, remove_serve_file, write_serve_file
from tasks.common.errors import InputError

PREFECT = [sys.executable, "-m", "prefect"]


@dataclass
class ServeOptions:
    """What `imtext serve` starts and where."""

    host: str = "127.0.0.1"
    port: int = 4200
    server: bool = True
    worker: bool = True
    worker_limit: int | None = None
    prefect_file: Path = PREFECT_FILE
    log_dir: Path | None = None
    poll_seconds: float = 2.0
    startup_timeout_s: float = 180.0
    only: frozenset[str] | None = None
    prepare_warehouse: bool = True

    @property
    def api_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}/api"


class Child:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path):
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_term_with_parent if sys.platform == "linux" else None,
        )
        self._seen: set[int] = set()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def remember_descendants(self) -> None:
        """Note the processes this child started, so stop() can reach those that left its group."""
        self._seen |= descendants(self.pid)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGINT to the group, then SIGTERM, then SIGKILL; stray descendants are killed too."""
        self.remember_descendants()
        for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if not self.alive():
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(wait_s)
        for pid in self._seen:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self._log.close()
        return self.popen.returncode


def _term_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies, even by SIGKILL.

    The children run in their own sessions (so a terminal's Ctrl-C reaches serve alone, which stops
    them in order); without this, a serve killed outright would leave its server and worker running.
    """
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, read from /proc (empty where /proc is missing)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = entry.read_text()
        except OSError:
            continue
        # The command name may hold spaces or parentheses; the fields after the last ')' do not.
        fields = text.rsplit(")", 1)[-1].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_for_api(api_url: str, child: Child | None, timeout_s: float, headers: dict[str, str]) -> None:
    """Poll GET /health until the server answers; fail early if the server process died."""
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(f"{api_url}/health", headers=headers)
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(f"the Prefect server exited during start-up; see {child.log_path}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"no Prefect API at {api_url} after {timeout_s:.0f}s")


def child_env(options: ServeOptions) -> dict[str, str]:
    """The environment of the server, the worker and the flow runs it starts."""
    env = dict(os.environ)
    env["PREFECT_API_URL"] = options.api_url
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    env["PREFECT_WORKER_QUERY_SECONDS"] = str(options.poll_seconds)
    # A server started with auth needs the same string on the client side.
    if env.get("PREFECT_SERVER_API_AUTH_STRING") and not env.get("PREFECT_API_AUTH_STRING"):
        env["PREFECT_API_AUTH_STRING"] = env["PREFECT_SERVER_API_AUTH_STRING"]
    return env


def _auth_headers(env: dict[str, str]) -> dict[str, str]:
    import base64

    auth = env.get("PREFECT_API_AUTH_STRING")
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Treat SIGTERM (docker stop, systemd) like Ctrl-C, so both shut down the same way.

    SIGINT is made to interrupt too: a shell starts background jobs with SIGINT ignored, and Python
    keeps it so, and then a SIGINT from a script or a supervisor would leave serve running.
    """

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _register(options: ServeOptions, env: dict[str, str]) -> Registered:
    """setup_project against the API this serve talks to (Prefect's settings are read at import)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from flows.deployments import setup_project

    updates = {PREFECT_API_URL: env["PREFECT_API_URL"]}
    if env.get("PREFECT_API_AUTH_STRING"):
        updates[PREFECT_API_AUTH_STRING] = env["PREFECT_API_AUTH_STRING"]
    with temporary_settings(updates=updates):
        return setup_project(options.prefect_file, only=set(options.only) if options.only else None)


def ensure_postgres_database(dsn: str) -> bool:
    """Create the database named in a libpq `dsn` when it does not exist; True when created."""
    import psycopg2
    from psycopg2 import errors, sql
    from psycopg2.extensions import parse_dsn

    params = parse_dsn(dsn)
    name = params.pop("dbname", None)
    if not name:
        raise InputError("IMTEXT_WAREHOUSE=postgres:... must name a database (dbname=...)")
    try:
        psycopg2.connect(dbname=name, connect_timeout=10, **params).close()
        return False
    except psycopg2.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise InputError(f"cannot reach the Postgres catalog database {name!r}: {exc}") from None
    admin = psycopg2.connect(dbname="postgres", connect_timeout=10, **params)
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except errors.DuplicateDatabase:
        return False  # another setup created it meanwhile
    finally:
        admin.close()
    return True


def prepare_warehouse(echo: Callable[[str], None] = print) -> None:
    """Create a Postgres catalog's database when missing and apply the schema, before any flow runs."""
    from flows.runtime import open_warehouse
    from flows.settings import load_settings

    settings = load_settings()
    kind, _, rest = settings.catalog.partition(":")
    if kind == "postgres" and ensure_postgres_database(rest):
        echo("created the warehouse catalog database")
    open_warehouse(settings).close()
    echo(f"warehouse ready ({kind} catalog)")


def serve(options: ServeOptions, echo: Callable[[str], None] = print) -> int:
    """Start what `options` asks for, register the deployments, and block until Ctrl-C or SIGTERM.

    Returns the exit code: 0 after a requested stop, 1 when a child process died on its own.
    """
    if not Path(options.prefect_file).exists():
        raise InputError(f"no {options.prefect_file}: imtext serve runs from the project checkout")
    if options.only:
        from flows.deployments import load_project

        known = {d.name for d in load_project(options.prefect_file).deployments}
        if unknown := sorted(set(options.only) - known):
            raise InputError(f"no deployment named {', '.join(unknown)} in {options.prefect_file}")
    if options.server and not port_free(options.host, options.port):
        raise InputError(f"port {options.port} on {options.host} is in use: stop that server or pass --port")
    env = child_env(options)
    if not options.server:
        env["PREFECT_API_URL"] = os.environ.get("PREFECT_API_URL") or options.api_url
    log_dir = Path(options.log_dir or Path(env.get("PREFECT_HOME", "~/.prefect")).expanduser() / "serve")
    project_dir = Path(options.prefect_file).resolve().parent
    children: list[Child] = []
    code = 0
    with _sigterm_as_interrupt():
        try:
            if options.server:
                argv = [*PREFECT, "server", "start", "--host", options.host, "--port", str(options.port)]
                children.append(Child("server", argv, env, log_dir / "server.log", project_dir))
                echo(f"starting the Prefect server (log: {log_dir / 'server.log'}) ...")
            wait_for_api(
                env["PREFECT_API_URL"],
                children[0] if children else None,
                options.startup_timeout_s,
                _auth_headers(env),
            )
            if options.server:  # later imtext commands in this PREFECT_HOME record their runs here
                write_serve_file(prefect_home(env), env["PREFECT_API_URL"])
            registered = _register(options, env)
            for name, deployment_id in sorted(registered.deployments.items()):
                echo(f"  deployment {name}  ({deployment_id})")
            for name, reason in sorted(registered.skipped.items()):
                echo(f"  skipped {name}: {reason}")
            if options.prepare_warehouse:
                prepare_warehouse(echo)
            if options.worker:
                argv = [
                    *PREFECT,
                    "worker",
                    "start",
                    "--pool",
                    _pool_name(options),
                    "--install-policy",
                    "never",
                ]
                if options.worker_limit:
                    argv += ["--limit", str(options.worker_limit)]
                children.append(Child("worker", argv, env, log_dir / "worker.log", project_dir))
                echo(f"worker started on pool {_pool_name(options)} (log: {log_dir / 'worker.log'})")
            if not children:
                return 0
            ui = env["PREFECT_API_URL"].removesuffix("/api")
            echo(f"Prefect UI: {ui}   API: {env['PREFECT_API_URL']}   Ctrl-C stops everything")
            ticks = 0
            while True:
                for child in children:
                    if not child.alive():
                        echo(
                            f"the {child.name} exited with code {child.popen.returncode}; see {child.log_path}"
                        )
                        code = 1
                        raise KeyboardInterrupt
                    if ticks % 4 == 0:
                        child.remember_descendants()
                ticks += 1
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            if children:
                echo("stopping ...")
            # A second Ctrl-C, or the group-wide SIGTERM of `timeout`, must not cut the stop short
            # and leave children running: the stop is bounded in time anyway.
            with _signals_ignored():
                remove_serve_file(prefect_home(env))
                for child in reversed(children):
                    child.stop()
    return code


@contextlib.contextmanager
def _signals_ignored():
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _pool_name(options: ServeOptions) -> str:
    from flows.deployments import load_project

    return load_project(options.prefect_file).pool
