"""Run the suites: read each table's frame at one snapshot, let Great Expectations evaluate the
checks, turn its results into `validation_results` rows, build Data Docs, write a summary.

Great Expectations runs in an ephemeral (in-memory) context with no analytics and no progress
bars; the only files it writes are the Data Docs, under the folder it is given. Importing this
module loads neither Great Expectations nor pandas: a run that reuses every earlier outcome
(`expectations.reuse`) never needs them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from expectations import SUITE_NAMES
from tasks.common.errors import InputError
from tasks.report.markdown import format_value
from warehouse.db import arrow_views, load_query

if TYPE_CHECKING:  # Great Expectations and pandas load only when a suite is evaluated
    import pandas as pd

    from expectations.base import Suite

log = logging.getLogger(__name__)

DATASOURCE = "warehouse"
DOCS_SITE = "imtext"
# Unexpected values kept per failed expectation in `validation_results.details`.
SAMPLE_VALUES = 10


@dataclass
class Outcome:
    """The outcome of one expectation, as stored in `validation_results`."""

    suite: str
    expectation: str
    blocking: bool
    success: bool
    unexpected_count: int | None
    element_count: int | None
    details: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.suite}.{self.expectation}"


@dataclass
class SuiteRun:
    """One suite over one frame: its outcomes, or why it was skipped.

    A reused run was not evaluated again: `reused_from` is the earlier run whose outcomes (stored
    under that run's id) still hold, evaluated at `snapshot`, and nothing it read changed since.
    """

    suite: str
    rows: int
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: str | None = None
    validated_at: dt.datetime | None = None
    seconds: float = 0.0
    reused_from: str | None = None
    snapshot: int | None = None


@dataclass
class Report:
    """Everything one validation run found."""

    run_id: str
    snapshot: int
    runs: list[SuiteRun]
    data_docs: str | None = None

    @property
    def outcomes(self) -> list[Outcome]:
        return [o for run in self.runs for o in run.outcomes]

    @property
    def failed_blocking(self) -> list[str]:
        return [o.key for o in self.outcomes if o.blocking and not o.success]

    @property
    def failed_warnings(self) -> list[str]:
        return [o.key for o in self.outcomes if not o.blocking and not o.success]

    @property
    def success(self) -> bool:
        return not self.failed_blocking

    @property
    def reused(self) -> list[str]:
        return [r.suite for r in self.runs if r.reused_from]

    def summary(self) -> dict[str, Any]:
        """The small dict a flow returns; a reused suite names the run and snapshot its outcome is from."""
        return {
            "success": self.success,
            "failed_blocking": self.failed_blocking,
            "failed_warnings": self.failed_warnings,
            "snapshot": self.snapshot,
            "run_id": self.run_id,
            "data_docs": self.data_docs,
            "reused": self.reused,
            "suites": {r.suite: _suite_summary(r) for r in self.runs},
        }


def _suite_summary(run: SuiteRun) -> dict[str, Any]:
    info: dict[str, Any] = (
        {"skipped": run.skipped}
        if run.skipped
        else {
            "rows": run.rows,
            "expectations": len(run.outcomes),
            "failed": sum(not o.success for o in run.outcomes),
            "seconds": round(run.seconds, 2),
        }
    )
    if run.reused_from:
        info |= {"reused": run.reused_from, "validated_snapshot": run.snapshot}
    return info


# -- suites --------------------------------------------------------------------------------------
def suite_names(names: list[str] | str | None = None) -> list[str]:
    """The names of the suites named (all of them when None), in run order; an unknown name is an InputError."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    wanted = list(SUITE_NAMES) if not names else names
    unknown = [n for n in wanted if n not in SUITE_NAMES]
    if unknown:
        raise InputError(f"unknown suite {', '.join(unknown)}: choose from {', '.join(SUITE_NAMES)}")
    return [n for n in SUITE_NAMES if n in wanted]


def suites(names: list[str] | str | None = None) -> list[Suite]:
    """The suites named (all of them when None), in run order; an unknown name is an InputError."""
    return [importlib.import_module(f"expectations.{n}").SUITE for n in suite_names(names)]


# -- Great Expectations context -------------------------------------------------------------------
def gx_context(docs_dir: Path | None = None):
    """An in-memory Great Expectations context: no analytics, no progress bars, Data Docs in `docs_dir`."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs_dir is not None:
        sites[DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "show_cta_footer": False},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    _no_batch_fingerprint()
    return gx.get_context(mode="ephemeral", project_config=config)


def _no_batch_fingerprint() -> None:
    """Stop GX hashing every value of each pandas batch (it stores an md5 of the frame as metadata).

    The frame is already identified by the warehouse snapshot it was read at, stored with every
    outcome; the hash cost more than all the expectations together on a million-row frame
    (pandas hashes strings one Python object at a time). GX fingerprints frames below
    HASH_THRESHOLD bytes only; nothing in GX reads the fingerprint back.
    """
    from great_expectations.execution_engine import pandas_execution_engine

    if hasattr(pandas_execution_engine, "HASH_THRESHOLD"):
        pandas_execution_engine.HASH_THRESHOLD = 0


# -- frames ---------------------------------------------------------------------------------------
def read_frame(con, suite: Suite, snapshot: int) -> pd.DataFrame:
    """The suite's frame at `snapshot`: only the columns its checks need, small texts as categoricals.

    A suite that is skipped while its table is empty gets an empty frame without running its query.
    """
    import pandas as pd

    if suite.skip_when_empty and table_is_empty(con, suite.table, snapshot):
        return pd.DataFrame()
    table = con.execute(load_query(suite.query), {"snapshot": snapshot}).to_arrow_table()
    return to_pandas(table, suite.categorical)


def table_is_empty(con, table: str, snapshot: int) -> bool:
    if table not in {s for s in SUITE_NAMES}:  # identifiers come from the fixed list of suite tables
        raise ValueError(f"not a validated table: {table}")
    return (
        con.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {table} AT (VERSION => $s) LIMIT 1)", {"s": snapshot}
        ).fetchone()[0]
        == 0
    )


def to_pandas(table: pa.Table, categorical: tuple[str, ...] = ()) -> pd.DataFrame:
    """Arrow to pandas in the dtypes Great Expectations evaluates fastest.

    Low-cardinality text columns become categoricals (cheap to fingerprint and to match against a
    set); integers become int64 (or float64 with NULLs), the dtypes for which GX compares a
    column with its bounds in one vectorised step rather than calling Python per value.
    """
    for index, name in enumerate(table.column_names):
        column = table.column(index)
        if name in categorical:
            table = table.set_column(index, name, pc.dictionary_encode(column))
        elif pa.types.is_integer(column.type) and column.type != pa.int64():
            table = table.set_column(index, name, column.cast(pa.int64()))
    return table.to_pandas(split_blocks=True, self_destruct=True)


# -- running --------------------------------------------------------------------------------------
def run_suite(context, suite: Suite, frame: pd.DataFrame, run_id: str) -> SuiteRun:
    """Evaluate every check of `suite` on `frame` with Great Expectations; one Outcome per check."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    started = time.perf_counter()
    validated_at = dt.datetime.now(dt.UTC)
    run = SuiteRun(suite=suite.name, rows=len(frame), validated_at=validated_at)
    if suite.skip_when_empty and frame.empty:
        run.skipped = f"{suite.table} is empty"
        return run
    try:
        datasource = context.data_sources.get(DATASOURCE)
    except KeyError:
        datasource = context.data_sources.add_pandas(DATASOURCE)
    asset = datasource.add_dataframe_asset(suite.name)
    batch = asset.add_batch_definition_whole_dataframe("snapshot")
    gx_suite = context.suites.add(
        gx.ExpectationSuite(name=suite.name, expectations=[c.build(suite.name) for c in suite.checks])
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=gx_suite)
    )
    result = definition.run(
        batch_parameters={"dataframe": frame},
        result_format="BASIC",
        run_id=RunIdentifier(run_name=run_id, run_time=validated_at),
    )
    by_name = {r.expectation_config.meta["check"]: r for r in result.results}
    for check in suite.checks:
        run.outcomes.append(outcome(suite.name, check, by_name.get(check.name), len(frame)))
    run.seconds = time.perf_counter() - started
    return run


def outcome(suite: str, check, result, rows: int) -> Outcome:
    """One GX expectation result as an Outcome (a missing result counts as a failure)."""
    if result is None:
        return Outcome(suite, check.name, check.blocking, False, None, rows, {"error": "no result"})
    res = result.result or {}
    config = result.expectation_config
    details: dict[str, Any] = {
        "type": config.type,
        "kwargs": {k: v for k, v in config.kwargs.items() if k not in ("batch_id",)},
    }
    if check.why:
        details["why"] = check.why
    for key in ("observed_value", "unexpected_percent", "missing_count"):
        if res.get(key) is not None:
            details[key] = res[key]
    if res.get("partial_unexpected_list"):
        details["unexpected_sample"] = res["partial_unexpected_list"][:SAMPLE_VALUES]
    error = _exception_message(result.exception_info)
    if error:
        details["error"] = error
    unexpected = res.get("unexpected_count")
    element = res.get("element_count", rows)
    return Outcome(
        suite=suite,
        expectation=check.name,
        blocking=check.blocking,
        success=bool(result.success) and not error,
        unexpected_count=None if unexpected is None else int(unexpected),
        element_count=None if element is None else int(element),
        details=details,
    )


def _exception_message(info) -> str | None:
    """The first exception message in a GX exception_info (flat or keyed by metric)."""
    if not info:
        return None
    if isinstance(info, dict) and "raised_exception" in info:
        return str(info.get("exception_message")) if info.get("raised_exception") else None
    if isinstance(info, dict):
        for value in info.values():
            message = _exception_message(value if isinstance(value, dict) else None)
            if message:
                return message.splitlines()[0][:500]
    return None


def validate(
    con, names: list[str] | str | None, snapshot: int, run_id: str | None = None, context=None
) -> Report:
    """Run the named suites (all when None) over the warehouse at `snapshot`; nothing is stored."""
    context = context if context is not None else gx_context()
    run_id = run_id or str(uuid.uuid4())
    runs = []
    for suite in suites(names):
        frame = read_frame(con, suite, snapshot)
        runs.append(run_suite(context, suite, frame, run_id))
        del frame
    return Report(run_id=run_id, snapshot=snapshot, runs=runs)


# -- storing --------------------------------------------------------------------------------------
def results_table(report: Report) -> pa.Table:
    """The rows of `validation_results` for a report: the outcomes it evaluated (reused ones are stored)."""
    rows = [
        {
            "run_id": report.run_id,
            "suite": o.suite,
            "expectation": o.expectation,
            "blocking": o.blocking,
            "success": o.success,
            "unexpected_count": o.unexpected_count,
            "element_count": o.element_count,
            "details": json.dumps(o.details, default=str, sort_keys=True),
            "snapshot": report.snapshot,
            "validated_at": run.validated_at,
        }
        for run in report.runs
        if not run.reused_from
        for o in run.outcomes
    ]
    schema = pa.schema(
        [
            ("run_id", pa.string()),
            ("suite", pa.string()),
            ("expectation", pa.string()),
            ("blocking", pa.bool_()),
            ("success", pa.bool_()),
            ("unexpected_count", pa.int64()),
            ("element_count", pa.int64()),
            ("details", pa.string()),
            ("snapshot", pa.int64()),
            ("validated_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def runs_table(report: Report, recorded_at: dt.datetime | None = None) -> pa.Table:
    """The rows of `validation_runs` for a report: which snapshot each suite was checked at, and by
    which suite definition, whether it was evaluated or its earlier outcome reused."""
    from expectations.reuse import definition

    recorded_at = recorded_at or dt.datetime.now(dt.UTC)
    rows = [
        {
            "run_id": report.run_id,
            "suite": run.suite,
            "snapshot": report.snapshot,
            "definition": definition(run.suite),
            "source": "reused" if run.reused_from else "validated",
            "outcome_run": run.reused_from or report.run_id,
            "outcome_snapshot": run.snapshot if run.reused_from else report.snapshot,
            "skipped": run.skipped,
            "rows": run.rows,
            "seconds": run.seconds,
            "validated_at": run.validated_at,
            "recorded_at": recorded_at,
        }
        for run in report.runs
    ]
    schema = pa.schema(
        [
            ("run_id", pa.string()),
            ("suite", pa.string()),
            ("snapshot", pa.int64()),
            ("definition", pa.string()),
            ("source", pa.string()),
            ("outcome_run", pa.string()),
            ("outcome_snapshot", pa.int64()),
            ("skipped", pa.string()),
            ("rows", pa.int64()),
            ("seconds", pa.float64()),
            ("validated_at", pa.timestamp("us", tz="UTC")),
            ("recorded_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def store(wh, report: Report) -> int:
    """Store a report in one snapshot: the outcomes it evaluated into `validation_results`, and one
    `validation_runs` row per suite (both anti-joined on run and suite, so a retry adds nothing).
    Returns the `validation_results` rows added."""
    results, runs = results_table(report), runs_table(report)
    if runs.num_rows == 0:
        return 0
    sql = load_query("validate_insert_results")
    runs_sql = load_query("validate_insert_runs")

    def insert(con) -> int:
        with arrow_views(con, validation_batch=results, validation_runs_batch=runs):
            added = con.execute(sql).fetchone()[0] if results.num_rows else 0
            con.execute(runs_sql)
        return added

    return wh.write(insert)


# -- reporting ------------------------------------------------------------------------------------
def build_data_docs(context, docs_dir: Path, staging: Path) -> Path:
    """Render Data Docs of this run into `staging`, then swap it in as `docs_dir`; returns index.html."""
    context.build_data_docs(site_names=[DOCS_SITE])
    docs_dir.parent.mkdir(parents=True, exist_ok=True)
    old = docs_dir.with_name(f".{docs_dir.name}.old-{uuid.uuid4().hex[:8]}")
    if docs_dir.exists():
        docs_dir.rename(old)
    staging.rename(docs_dir)
    with contextlib.suppress(OSError):
        shutil.rmtree(old)
    return docs_dir / "index.html"


def summary_markdown(report: Report) -> str:
    """A markdown summary of a validation run (the flow run's artifact)."""
    status = "passed" if report.success else "FAILED"
    lines = [
        f"# Validation {status}",
        "",
        f"Snapshot **{report.snapshot}**, run `{report.run_id}`.",
        "",
        "| suite | rows | expectations | failed blocking | failed warnings | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in report.runs:
        name = (
            f"{run.suite} (unchanged: outcome of snapshot {run.snapshot})" if run.reused_from else run.suite
        )
        if run.skipped:
            lines.append(f"| {name} | {run.rows} | skipped: {run.skipped} | | | |")
            continue
        blocking = sum(o.blocking and not o.success for o in run.outcomes)
        warnings = sum(not o.blocking and not o.success for o in run.outcomes)
        lines.append(
            f"| {name} | {run.rows:,} | {len(run.outcomes)} | {blocking} | {warnings} | {run.seconds:.2f} |"
        )
    failed = [o for o in report.outcomes if not o.success]
    if failed:
        lines += [
            "",
            "## Failed expectations",
            "",
            "| expectation | kind | unexpected rows | sample |",
            "|---|---|---:|---|",
        ]
        for o in sorted(failed, key=lambda o: (not o.blocking, o.key)):
            sample = (
                o.details.get("unexpected_sample")
                or o.details.get("error")
                or o.details.get("observed_value")
            )
            shown = ", ".join(map(str, sample[:3])) if isinstance(sample, list) else str(sample)
            sample_text = format_value(shown, limit=80)
            count = "" if o.unexpected_count is None else f"{o.unexpected_count:,}"
            kind = "blocking" if o.blocking else "warning"
            lines.append(f"| `{o.key}` | {kind} | {count} | {sample_text} |")
    if report.data_docs:
        lines += ["", f"Data Docs: `{report.data_docs}`"]
    if report.reused:
        lines += [
            "",
            f"Not evaluated again (nothing they read changed): {', '.join(report.reused)}; their outcomes "
            "are stored under the run that evaluated them, see `validation_runs`.",
        ]
    lines += [
        "",
        'Every outcome: `imtext sql "SELECT * FROM validation_latest"`; this run\'s: '
        "`imtext sql \"SELECT * FROM validation_runs WHERE run_id = '" + report.run_id + "'\"`",
    ]
    return "\n".join(lines) + "\n"
