"""Which Prefect API a command uses: a configured or served one that answers, else a local one."""

from __future__ import annotations

import http.server
import json
import socket
import threading

import pytest

from flows import prefect_api
from flows.prefect_api import choose, ensure_api, read_serve_file, remove_serve_file, write_serve_file


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the stdlib's name
        ok = self.path == "/api/health"
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b"true" if ok else b"")

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    """A stand-in Prefect API that answers /api/health."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()


@pytest.fixture
def dead_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"  # nothing listens here any more


def test_a_given_api_that_answers_is_used(api, tmp_path):
    env = {"PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path)}
    assert choose(env) == prefect_api.Choice("given", api)


def test_a_profile_api_that_answers_is_used(api, tmp_path):
    (tmp_path / "profiles.toml").write_text(
        f'active = "team"\n[profiles.team]\nPREFECT_API_URL = "{api}"\n[profiles.ephemeral]\n'
    )
    assert choose({"PREFECT_HOME": str(tmp_path)}).kind == "given"


def test_a_running_imtext_serve_is_found_through_its_file(api, tmp_path):
    write_serve_file(tmp_path, api)
    assert choose({"PREFECT_HOME": str(tmp_path)}) == prefect_api.Choice("serve", api)
    # Without PREFECT_HOME, `imtext serve` keeps Prefect's home under IMTEXT_HOME.
    write_serve_file(tmp_path / "home" / "prefect", api)
    assert choose({"IMTEXT_HOME": str(tmp_path / "home")}).kind == "serve"


def test_an_unreachable_api_falls_back_with_a_note(dead_url, api, tmp_path):
    choice = choose({"PREFECT_API_URL": dead_url, "PREFECT_HOME": str(tmp_path)})
    assert choice.kind == "local" and dead_url in choice.note
    write_serve_file(tmp_path, api)
    assert choose({"PREFECT_API_URL": dead_url, "PREFECT_HOME": str(tmp_path)}).kind == "serve"


def test_a_stale_serve_file_is_ignored_and_removed_only_by_its_writer(dead_url, tmp_path):
    path = write_serve_file(tmp_path, dead_url)
    assert read_serve_file(tmp_path) == dead_url
    assert choose({"PREFECT_HOME": str(tmp_path)}) == prefect_api.Choice("local")
    path.write_text(json.dumps({"api_url": dead_url, "pid": -1}))
    remove_serve_file(tmp_path)
    assert path.exists()


def test_ensure_api_points_the_environment_at_imtext_serve(api, tmp_path, monkeypatch):
    write_serve_file(tmp_path, api)
    env = {"PREFECT_HOME": str(tmp_path)}
    # Prefect is imported in this test process; pretend it is not yet, as in a fresh command.
    monkeypatch.delitem(__import__("sys").modules, "prefect", raising=False)
    monkeypatch.setattr(prefect_api, "LocalServer", None)  # starting a server would fail the test
    notes: list[str] = []
    assert ensure_api(env, echo=notes.append) == prefect_api.Choice("serve", api)
    assert env["PREFECT_API_URL"] == api and notes == []


def test_ensure_api_leaves_an_imported_prefect_alone(api, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "prefect", object())
    env = {"PREFECT_HOME": str(tmp_path), "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    assert ensure_api(env) is None
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:9/api"


def test_cli_flow_runs_have_no_heartbeat_thread_unless_one_is_asked_for(monkeypatch):
    """Prefect joins its heartbeat thread, which sleeps in whole seconds, at every flow run's end."""
    from prefect.settings import get_current_settings

    from flows.commands.common import run_flow

    monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)
    monkeypatch.delenv("PREFECT_RUNNER_HEARTBEAT_FREQUENCY", raising=False)
    default = get_current_settings().flows.heartbeat_frequency
    assert default is not None  # Prefect's own default: heartbeats on
    assert run_flow(lambda: get_current_settings().flows.heartbeat_frequency) is None
    assert get_current_settings().flows.heartbeat_frequency == default  # only inside the call
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "60")
    assert run_flow(lambda x: (x, get_current_settings().flows.heartbeat_frequency), 1) == (1, default)
