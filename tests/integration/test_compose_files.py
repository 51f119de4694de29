"""docker-compose.yml, Dockerfile, .env.example and prefect.yaml are valid and say what they should.

No Docker engine runs here: the compose file is validated against the Compose Specification
schema (vendored, see data/compose_spec.NOTICE) after interpolating .env.example, and with
`docker-compose config` / `docker compose config` too where such a binary is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).with_name("data")
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SECRET_KEYS = re.compile(r"PASSWORD|AUTH_STRING|API_KEY|SECRET|TOKEN", re.I)
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def interpolate(value, env: dict[str, str]):
    """Compose's variable substitution: ${X}, ${X:-default}, ${X:?error}, $X and $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3)
        current = env.get(name)
        if op in (":-", "-"):
            return current if current not in (None, "") or (op == "-" and current is not None) else arg
        if op in (":?", "?"):
            if current in (None, "") if op == ":?" else current is None:
                raise AssertionError(f"{name} is required ({arg}) but .env.example does not set it")
            return current
        return current or ""

    return _VAR.sub(substitute, value)


def variables(value) -> set[str]:
    text = json.dumps(value)
    return {m.group(1) or m.group(4) for m in _VAR.finditer(text) if m.group(0) != "$$"}


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    return interpolate(raw, read_env(ENV_EXAMPLE))


def test_compose_file_matches_the_compose_specification(compose):
    schema = json.loads((DATA / "compose_spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_compose_config_accepts_the_file_when_a_compose_binary_exists(tmp_path):
    """The real parser, where one is installed (Debian's docker-compose, or the docker plugin)."""
    if shutil.which("docker-compose"):
        argv = ["docker-compose"]
    elif (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        argv = ["docker", "compose"]
    else:
        return  # the schema test above covers the file without a binary
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    for extra in ([], ["--profile", "gpu"]):
        done = subprocess.run([*argv, *extra, "config", "-q"], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    listed = subprocess.run(
        [*argv, "--profile", "gpu", "config", "--services"], cwd=tmp_path, capture_output=True, text=True
    )
    assert set(listed.stdout.split()) == {"postgres", "prefect-server", "setup", "cpu-worker", "gpu-worker"}


def test_topology(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "prefect-server", "setup", "cpu-worker", "gpu-worker"}
    assert services["postgres"]["healthcheck"]["test"]
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["prefect-server"]["healthcheck"]["test"]
    assert services["setup"]["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    for worker in ("cpu-worker", "gpu-worker"):
        assert services[worker]["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    # Only the GPU worker is behind the profile, and it gets the NVIDIA runtime and a GPU.
    assert [name for name, s in services.items() if s.get("profiles")] == ["gpu-worker"]
    gpu = services["gpu-worker"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["runtime"] == "nvidia"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices)


def test_volumes_hold_the_warehouse_and_models(compose):
    assert {"imtext-data", "postgres-data"} <= set(compose["volumes"])
    for name in ("setup", "cpu-worker", "gpu-worker"):
        service = compose["services"][name]
        assert "imtext-data:/data" in service["volumes"]
        assert service["environment"]["IMTEXT_HOME"] == "/data"  # warehouse data and models under it
        assert service["environment"]["IMTEXT_WAREHOUSE"].startswith("postgres:")
    assert "postgres-data:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]


def test_server_auth_is_on_and_every_client_sends_it(compose):
    services = compose["services"]
    server_auth = services["prefect-server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"]
    assert server_auth and ":" in server_auth
    for name in ("setup", "cpu-worker", "gpu-worker"):
        env = services[name]["environment"]
        assert env["PREFECT_API_AUTH_STRING"] == server_auth
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"


def test_no_secret_is_written_in_the_compose_file(raw):
    def walk(node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                if SECRET_KEYS.search(str(key)) and isinstance(value, str):
                    assert re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}", value), (
                        f"{path}/{key} must come from .env, not be written in the file: {value!r}"
                    )
                    assert ":-" not in value or value.endswith(":-}"), f"{path}/{key} has a default secret"
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, path)

    walk(raw)
    # The catalog string carries no password (libpq reads PGPASSWORD).
    assert "password" not in json.dumps(raw["x-imtext-env"]["IMTEXT_WAREHOUSE"]).lower()


def test_env_example_defines_every_required_variable_with_placeholders(raw):
    env = read_env(ENV_EXAMPLE)
    required = {m.group(1) for m in _VAR.finditer(COMPOSE.read_text()) if m.group(2) in (":?", "?")}
    assert required <= set(env), f"missing from .env.example: {required - set(env)}"
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    assert variables(raw) - {"NVIDIA_VISIBLE_DEVICES"} <= documented
    for key, value in env.items():
        if SECRET_KEYS.search(key) and value:
            assert "change-me" in value, f"{key} in .env.example must be a placeholder"


def test_workers_poll_the_pool_and_queues_of_prefect_yaml(compose):
    setup = yaml.safe_load((ROOT / "prefect.yaml").read_text())["setup"]
    pool = setup["work_pool"]["name"]
    queues = {q["name"] for q in setup["work_queues"]}
    for name, queue in (("cpu-worker", "default"), ("gpu-worker", "gpu")):
        command = compose["services"][name]["command"]
        assert command[:3] == ["prefect", "worker", "start"]
        assert command[command.index("--pool") + 1] == pool
        assert command[command.index("--work-queue") + 1] == queue
        assert queue in queues
    assert compose["services"]["setup"]["command"] == ["imtext", "serve", "--no-server", "--no-worker"]


def test_dockerfile_installs_the_pinned_torch_and_the_project():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    assert "pip install torch==2.13.0" in text
    assert "pip install -e ." in text
    assert text.index("torch==2.13.0") < text.index("pip install -e .")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", "imtext-home", ".git"} <= set(ignored)


def test_prefect_yaml_is_what_prefect_deploy_reads():
    from prefect.cli.deploy._models import PrefectYamlModel

    raw_yaml = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    model = PrefectYamlModel.model_validate(raw_yaml)
    by_name = {d.name: d for d in model.deployments}
    assert set(by_name) == {
        "ingest",
        "harvest-classes",
        "harvest-images",
        "validate",
        "train",
        "curate",
        "export",
        "pipeline",
        "maintenance",
        "harvest-images-retry-failed",
    }
    for name, deployment in by_name.items():
        assert deployment.work_pool.name == raw_yaml["setup"]["work_pool"]["name"]
        assert deployment.concurrency_limit.limit == 1, name
        assert deployment.concurrency_limit.collision_strategy == "ENQUEUE"
        assert deployment.description
        path, _, func = deployment.entrypoint.partition(":")
        assert path.startswith("flows/") and path.endswith(".py") and func.endswith("_flow")
    gpu = {name for name, d in by_name.items() if "gpu" in d.tags}
    assert gpu == {"train", "curate"}
    assert {by_name[n].work_pool.work_queue_name for n in gpu} == {"gpu"}
    assert model.pull is None  # workers run the code where it was registered


def test_project_spec_reads_prefect_yaml():
    from flows.deployments import load_project

    spec = load_project()
    assert spec.pool == "imtext" and spec.pool_type == "process"
    assert {q["name"]: q["concurrency_limit"] for q in spec.queues}["gpu"] == 1
    assert spec.global_limits == ()  # the warehouse writer lock serialises commits, no Prefect limit
    ingest = next(d for d in spec.deployments if d.name == "ingest")
    assert ingest.entrypoint == "flows/ingest.py:ingest_flow"
    assert ingest.work_queue == "default" and ingest.concurrency_limit == 1


def test_every_deployment_points_at_a_flow_of_the_same_name():
    """Read without importing (no torch at collection): the entrypoint's function is a @flow whose
    name is the deployment's, so REST paths read /deployments/name/<name>/<name>."""
    import ast

    from flows.deployments import load_project

    for spec in load_project().deployments:
        path, _, func = spec.entrypoint.partition(":")
        tree = ast.parse((ROOT / path).read_text())
        found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == func]
        assert found, f"{spec.entrypoint}: no function {func}"
        names = [
            kw.value.value
            for d in found[0].decorator_list
            if isinstance(d, ast.Call) and getattr(d.func, "id", None) == "flow"
            for kw in d.keywords
            if kw.arg == "name"
        ]
        # a second deployment of a flow is named after it: harvest-images-retry-failed
        assert len(names) == 1 and (spec.name == names[0] or spec.name.startswith(names[0] + "-")), (
            f"{spec.entrypoint} is not @flow(name={spec.name!r})"
        )
