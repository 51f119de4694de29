"""Which Prefect API a command records its runs on, decided before Prefect is imported.

In order of preference:

1. `PREFECT_API_URL` (from the environment or the active Prefect profile), when it answers;
2. the server of a running `imtext serve`, whose URL it leaves in `$PREFECT_HOME/imtext-serve.json`
   (PREFECT_HOME as `imtext serve` sets it: `$IMTEXT_HOME/prefect` unless given);
3. a private local server started at once, in the background, so that it comes up while the command
   imports its flow, and stopped when the command exits.

(3) runs the same server as Prefect's ephemeral mode (uvicorn with Prefect's app factory, UI and
background services off, the database under PREFECT_HOME), but Prefect would start it only at the
first flow call, after importing the whole server code into the command's own process (about 3 s
of CPU) just to launch it. Started here, the command's imports and the server's start overlap.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

SERVE_FILE = "imtext-serve.json"
HEALTH_TIMEOUT_S = 2.0


def prefect_home(environ: Mapping[str, str] | None = None) -> Path:
    """PREFECT_HOME as Prefect reads it (default ~/.prefect)."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("PREFECT_HOME") or "~/.prefect").expanduser()


def serve_home(environ: Mapping[str, str] | None = None) -> Path:
    """PREFECT_HOME of an `imtext serve` started with the same environment (see flows/commands/serve.py)."""
    environ = os.environ if environ is None else environ
    if environ.get("PREFECT_HOME"):
        return Path(environ["PREFECT_HOME"]).expanduser()
    return Path(environ.get("IMTEXT_HOME") or "./imtext-home").expanduser().resolve() / "prefect"


def write_serve_file(home: Path, api_url: str) -> Path:
    """Tell later commands where `imtext serve`'s API is (removed again by `remove_serve_file`)."""
    path = Path(home) / SERVE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"api_url": api_url, "pid": os.getpid()}))
    tmp.replace(path)
    return path


def remove_serve_file(home: Path) -> None:
    """Remove the file if this process wrote it (another serve may have replaced it meanwhile)."""
    path = Path(home) / SERVE_FILE
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def read_serve_file(home: Path) -> str | None:
    try:
        url = json.loads((Path(home) / SERVE_FILE).read_text()).get("api_url")
    except (OSError, ValueError, AttributeError):
        return None
    return url if isinstance(url, str) and url else None


def profile_api_url(environ: Mapping[str, str] | None = None) -> str | None:
    """PREFECT_API_URL of the active Prefect profile (`prefect config set ...`), read without Prefect."""
    import tomllib

    environ = os.environ if environ is None else environ
    path = Path(environ.get("PREFECT_PROFILES_PATH") or prefect_home(environ) / "profiles.toml").expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return None
    active = environ.get("PREFECT_PROFILE") or data.get("active") or "ephemeral"
    value = (data.get("profiles") or {}).get(active, {}).get("PREFECT_API_URL")
    return value if isinstance(value, str) and value else None


def unreachable(api_url: str, timeout_s: float = HEALTH_TIMEOUT_S) -> str | None:
    """None when a server answers at `api_url` (any HTTP answer: auth is Prefect's to report), else why not."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))


@dataclass(frozen=True)
class Choice:
    """The API to use: `given` (PREFECT_API_URL), `serve` (a running imtext serve) or `local` (start one)."""

    kind: str
    url: str | None = None
    note: str | None = None


def choose(environ: Mapping[str, str], check: Callable[[str], str | None] = unreachable) -> Choice:
    """Decide where runs are recorded; `note` is a line for the user when a configured API is down."""
    given = environ.get("PREFECT_API_URL") or profile_api_url(environ)
    note = None
    if given:
        reason = check(given)
        if reason is None:
            return Choice("given", given)
        note = (
            f"no Prefect API answers at PREFECT_API_URL={given} ({reason}); "
            "this command records its runs on a temporary local Prefect server instead"
        )
    served = read_serve_file(serve_home(environ))
    if served and check(served) is None:
        return Choice("serve", served, note)
    return Choice("local", None, note)


class LocalServer:
    """A private Prefect API server in a child process, stopped when this process exits."""

    def __init__(self, environ: Mapping[str, str], log_path: Path):
        self.environ = dict(environ)
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {k: v for k, v in self.environ.items() if k != "PREFECT_API_URL"}
        env.update(PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # Own session: Ctrl-C reaches the command alone, which then ends its runs on a live API.
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
                    "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on",
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        atexit.register(self.stop)

    def wait(self, timeout_s: float) -> None:
        """Block until the server answers; a server that died (say, the port was taken) is restarted once."""
        deadline = time.monotonic() + timeout_s
        restarted = False
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                if restarted:
                    break
                restarted = True
                self.start()
                continue
            if unreachable(self.api_url, timeout_s=1.0) is None:
                return
            time.sleep(0.05)
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        self.stop()
        raise RuntimeError(f"the local Prefect server did not come up in {timeout_s:.0f}s; its log:\n{tail}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the command dies without running atexit (kill -9, OOM)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_started: LocalServer | None = None


def ensure_api(
    environ: MutableMapping[str, str] | None = None,
    preload: tuple[str, ...] = (),
    echo: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Choice | None:
    """Point this process at a Prefect API before Prefect is imported; returns what was chosen.

    Does nothing once Prefect is imported (tests under a Prefect harness, a flow calling a command):
    its settings are fixed by then. `preload` modules are imported while a local server starts.
    """
    global _started
    environ = os.environ if environ is None else environ
    if "prefect" in sys.modules or _started is not None:
        return None
    choice = choose(environ)
    if choice.note:
        echo(f"warning: {choice.note}")
    if choice.kind == "given":
        return choice
    if choice.kind == "serve":
        environ["PREFECT_API_URL"] = choice.url
        if environ.get("PREFECT_SERVER_API_AUTH_STRING") and not environ.get("PREFECT_API_AUTH_STRING"):
            environ["PREFECT_API_AUTH_STRING"] = environ["PREFECT_SERVER_API_AUTH_STRING"]
        return choice
    server = LocalServer(environ, prefect_home(environ) / "imtext-local-server.log")
    server.start()
    _started = server
    environ["PREFECT_API_URL"] = server.api_url
    for name in preload:
        with contextlib.suppress(ImportError):
            __import__(name)
    server.wait(float(environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or 120))
    return Choice("local", server.api_url, choice.note)
