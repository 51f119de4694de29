"""Register imtext on a Prefect server: work pool, queues, concurrency limits and the deployments of
prefect.yaml.

`imtext serve` calls `setup_project` on its own local server; a team calls it against a shared
server (`imtext serve --no-server --no-worker`). The deployments are the ones `prefect deploy --all`
would create from the same file, except that a deployment whose flow cannot be loaded is skipped
with a reason instead of stopping the others.
"""

from __future__ import annotations

import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parent.parent
PREFECT_FILE = PROJECT_DIR / "prefect.yaml"


@dataclass(frozen=True)
class DeploymentSpec:
    """One entry of prefect.yaml's `deployments:` list (the keys imtext uses)."""

    name: str
    entrypoint: str
    work_pool: str
    work_queue: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    job_variables: dict[str, Any] = field(default_factory=dict)
    concurrency_limit: int | None = None
    collision_strategy: str = "ENQUEUE"
    schedules: tuple[dict[str, Any], ...] = ()

    @property
    def flow_file(self) -> str:
        return self.entrypoint.rsplit(":", 1)[0]


@dataclass(frozen=True)
class ProjectSpec:
    """prefect.yaml: the work pool, its queues, global concurrency limits and deployments."""

    pool: str
    pool_type: str = "process"
    pool_concurrency: int | None = None
    queues: tuple[dict[str, Any], ...] = ()
    global_limits: tuple[dict[str, Any], ...] = ()
    deployments: tuple[DeploymentSpec, ...] = ()


@dataclass
class Registered:
    """What `setup_project` did: deployment ids by `flow/deployment` name, and skipped entries."""

    deployments: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def load_project(prefect_file: Path = PREFECT_FILE) -> ProjectSpec:
    """Parse prefect.yaml into a ProjectSpec (YAML anchors resolved)."""
    raw = yaml.safe_load(Path(prefect_file).read_text()) or {}
    setup = raw.get("setup") or {}
    pool = setup.get("work_pool") or {}
    specs = []
    for entry in raw.get("deployments") or []:
        work_pool = entry.get("work_pool") or {}
        limit = entry.get("concurrency_limit")
        if isinstance(limit, dict):
            strategy = limit.get("collision_strategy") or "ENQUEUE"
            limit = limit.get("limit")
        else:
            strategy = "ENQUEUE"
        specs.append(
            DeploymentSpec(
                name=entry["name"],
                entrypoint=entry["entrypoint"],
                work_pool=work_pool.get("name") or pool.get("name", "imtext"),
                work_queue=work_pool.get("work_queue_name"),
                description=entry.get("description"),
                tags=tuple(entry.get("tags") or ()),
                parameters=dict(entry.get("parameters") or {}),
                job_variables=dict(work_pool.get("job_variables") or {}),
                concurrency_limit=limit,
                collision_strategy=strategy,
                schedules=tuple(entry.get("schedules") or ()),
            )
        )
    return ProjectSpec(
        pool=pool.get("name", "imtext"),
        pool_type=pool.get("type", "process"),
        pool_concurrency=pool.get("concurrency_limit"),
        queues=tuple(setup.get("work_queues") or ()),
        global_limits=tuple(setup.get("global_concurrency_limits") or ()),
        deployments=tuple(specs),
    )


def ensure_work_pool(client, spec: ProjectSpec) -> None:
    """Create the work pool and its queues, or bring their concurrency limits up to date."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    if spec.pool_type != "process":
        raise ValueError(
            f"work pool {spec.pool!r}: imtext sets up 'process' pools only, not {spec.pool_type!r}"
        )
    try:
        client.read_work_pool(spec.pool)
        client.update_work_pool(spec.pool, WorkPoolUpdate(concurrency_limit=spec.pool_concurrency))
    except ObjectNotFound:
        client.create_work_pool(
            WorkPoolCreate(
                name=spec.pool,
                type="process",
                base_job_template=ProcessWorker.get_default_base_job_template(),
                concurrency_limit=spec.pool_concurrency,
            )
        )
    for queue in spec.queues:
        try:
            existing = client.read_work_queue_by_name(queue["name"], work_pool_name=spec.pool)
            client.update_work_queue(
                existing.id,
                concurrency_limit=queue.get("concurrency_limit"),
                description=queue.get("description"),
            )
        except ObjectNotFound:
            client.create_work_queue(
                name=queue["name"],
                work_pool_name=spec.pool,
                concurrency_limit=queue.get("concurrency_limit"),
                description=queue.get("description"),
            )


def ensure_global_limits(client, spec: ProjectSpec) -> None:
    """Create or update the global concurrency limits named in prefect.yaml."""
    for limit in spec.global_limits:
        client.upsert_global_concurrency_limit_by_name(limit["name"], int(limit["limit"]))


def register_deployment(spec: DeploymentSpec, project_dir: Path = PROJECT_DIR) -> tuple[str, str]:
    """Load the flow from the project checkout and create or update its deployment.

    Returns (`flow/deployment` name, deployment id).
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import RunnerDeployment
    from prefect.runner.storage import LocalStorage

    limit = None
    if spec.concurrency_limit:
        limit = ConcurrencyLimitConfig(
            limit=spec.concurrency_limit,
            collision_strategy=ConcurrencyLimitStrategy(spec.collision_strategy),
        )
    deployment = RunnerDeployment.from_storage(
        storage=LocalStorage(str(project_dir)),
        entrypoint=spec.entrypoint,
        name=spec.name,
        description=spec.description,
        tags=list(spec.tags),
        parameters=spec.parameters,
        concurrency_limit=limit,
        work_pool_name=spec.work_pool,
        work_queue_name=spec.work_queue,
        job_variables=spec.job_variables,
    )
    add_parameter_descriptions(deployment._parameter_openapi_schema, project_dir / spec.entrypoint)
    if spec.schedules:
        deployment.schedules = deployment_schedules(spec)
    return f"{deployment.flow_name}/{spec.name}", str(deployment.apply())


def deployment_schedules(spec: DeploymentSpec) -> list:
    """The cron schedules of a prefect.yaml entry, each active or not as its `active:` says.

    Every schedule gets a slug (given, or `<deployment>-<n>`), so registering again updates it
    in place rather than adding a copy.
    """
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule

    schedules = []
    for n, entry in enumerate(spec.schedules):
        if not entry.get("cron"):
            raise ValueError(f"deployment {spec.name}: imtext registers cron schedules only, not {entry}")
        schedules.append(
            DeploymentScheduleCreate(
                schedule=CronSchedule(cron=entry["cron"], timezone=entry.get("timezone") or "UTC"),
                active=_flag(entry.get("active", True)),
                parameters=dict(entry.get("parameters") or {}),
                slug=entry.get("slug") or f"{spec.name}-{n}",
            )
        )
    return schedules


def _flag(value) -> bool:
    """A YAML switch: a boolean, or a string such as "true"/"on"/"1"."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "on", "yes", "1")
    return bool(value)


def annotated_descriptions(fn) -> dict[str, str]:
    """Descriptions of `param: Annotated[T, Field(description=...)]` parameters, by name."""
    from pydantic.fields import FieldInfo

    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # an annotation that cannot be resolved: no descriptions rather than no deployment
        return {}
    found = {}
    for name, hint in hints.items():
        for meta in getattr(hint, "__metadata__", ()):
            if isinstance(meta, FieldInfo) and meta.description:
                found[name] = meta.description
    return found


def add_parameter_descriptions(schema, entrypoint: Path | str) -> None:
    """Fill the descriptions Prefect leaves out of a deployment's parameter schema.

    Prefect 3.9 builds the schema from the signature and reads descriptions from a
    `= Field(description=...)` default or the docstring, not from `Annotated[..., Field(...)]`
    metadata; the UI form shows them once they are in the schema.
    """
    from prefect.flows import load_flow_from_entrypoint

    try:
        flow = load_flow_from_entrypoint(str(entrypoint), use_placeholder_flow=False)
    except Exception:
        return
    for name, description in annotated_descriptions(flow.fn).items():
        prop = schema.properties.get(name)
        if prop is not None and not prop.get("description"):
            prop["description"] = description


def setup_project(
    prefect_file: Path = PREFECT_FILE, project_dir: Path | None = None, only: set[str] | None = None
) -> Registered:
    """Pool, queues, limits, then every deployment whose flow loads; needs PREFECT_API_URL set."""
    from prefect import get_client

    spec = load_project(prefect_file)
    project_dir = Path(project_dir or Path(prefect_file).resolve().parent)
    with get_client(sync_client=True) as client:
        ensure_work_pool(client, spec)
        ensure_global_limits(client, spec)
    result = Registered()
    for dep in spec.deployments:
        if only is not None and dep.name not in only:
            continue
        if not (project_dir / dep.flow_file).exists():
            result.skipped[dep.name] = f"{dep.flow_file} does not exist"
            continue
        try:
            full_name, deployment_id = register_deployment(dep, project_dir)
        except Exception as exc:  # one broken flow must not hide the others
            first_line = (str(exc).splitlines() or [""])[0]
            result.skipped[dep.name] = f"{type(exc).__name__}: {first_line}"
            log.warning("deployment %s skipped: %s", dep.name, exc)
            continue
        result.deployments[full_name] = deployment_id
    return result
