"""`imtext sql` and `imtext snapshots`: read-only access to the warehouse, no Prefect involved."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import sys
from enum import Enum

import typer

from flows.commands.common import user_errors

READ_ONLY_STATEMENTS = {"SELECT", "EXPLAIN", "PRAGMA", "RELATION"}
# Functions a query may not call, even on a sandboxed read-only connection: file readers (the
# sandbox stops most, but the SQLite and Postgres scanners open files and servers themselves),
# SQL run from a string (it would escape this check), and DuckLake's maintenance functions.
REFUSED_PREFIXES = ("read_", "sqlite_", "postgres_", "parquet_", "ducklake_", "iceberg_", "delta_")
REFUSED_FUNCTIONS = {"glob", "sniff_csv", "query", "query_table", "json_execute_serialized_sql"}
# DuckLake functions that only read the catalog: a snapshot list, table sizes and row changes.
ALLOWED_DUCKLAKE = {
    "ducklake_snapshots",
    "ducklake_table_info",
    "ducklake_table_changes",
    "ducklake_table_insertions",
    "ducklake_table_deletions",
}


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _jsonable(value):
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def check_read_only(con, query: str) -> None:
    """Refuse anything but queries: the warehouse is attached read-only, and COPY/ATTACH/SET are refused here."""
    from tasks.common.errors import InputError

    try:
        statements = con.extract_statements(query)
    except Exception as exc:  # a parser error is the user's to fix
        raise InputError(f"cannot parse the query: {exc}") from None
    if not statements:
        raise InputError("empty query")
    for statement in statements:
        kind = statement.type.name
        if kind not in READ_ONLY_STATEMENTS:
            raise InputError(
                f"imtext sql is read-only: {kind} statements are refused (use the flows to change data)"
            )
    refused = sorted(name for name in called_functions(query) if _refused(name))
    if refused:
        raise InputError(
            f"imtext sql reads the warehouse tables only: {', '.join(refused)} is refused "
            "(no files, no other databases, no maintenance)"
        )


def _refused(name: str) -> bool:
    if name in ALLOWED_DUCKLAKE:
        return False
    return name in REFUSED_FUNCTIONS or name.startswith(REFUSED_PREFIXES)


def called_functions(query: str) -> set[str]:
    """Lower-case names of everything called in `query`: each name token followed by `(`.

    DuckDB's own tokenizer is used, so names in strings and comments are not counted and quoted
    names ("read_csv"(...)) and qualified ones (system.main.read_csv(...)) are.
    """
    import duckdb

    tokens = duckdb.tokenize(query)
    names = set()
    for (start, kind), (following, _) in zip(tokens, tokens[1:], strict=False):
        if kind.name not in ("identifier", "keyword"):
            continue
        if query[following : following + 1] != "(":
            continue
        text = query[start:following].strip()
        if text.startswith('"') and text.endswith('"') and len(text) >= 2:
            text = text[1:-1].replace('""', '"')
        names.add(text.lower())
    return names


@user_errors
def sql(
    query: str = typer.Argument(
        ..., help="DuckDB SQL over the warehouse tables; AT (VERSION => n) reads a snapshot"
    ),
    format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table, csv or json"),
    max_rows: int = typer.Option(10_000, help="rows printed at most in table format"),
) -> None:
    """Run a read-only SQL query on the warehouse; works while flows are writing."""
    import duckdb

    from flows.settings import load_settings
    from tasks.common.errors import InputError
    from warehouse.db import Warehouse

    con = Warehouse.from_settings(load_settings()).reader(sandboxed=True)
    check_read_only(con, query)
    # A query can fail while it is planned or while its rows are produced (error(), a bad cast
    # on row 10,000): either way it is the query's fault, told in one line.
    try:
        relation = con.sql(query)
        if relation is None:
            return
        if format is OutputFormat.table:
            relation.show(max_rows=max_rows, max_width=200)
            return
        columns = relation.columns
        rows = relation.fetchall()
    except duckdb.Error as exc:
        raise InputError(_first_line(exc)) from None
    if format is OutputFormat.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        json.dump(
            [{c: _jsonable(v) for c, v in zip(columns, r, strict=True)} for r in rows], sys.stdout, indent=1
        )
        sys.stdout.write("\n")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@user_errors
def snapshots(limit: int = typer.Option(20, help="most recent snapshots to list")) -> None:
    """List warehouse snapshots; query one with `imtext sql "... FROM t AT (VERSION => n)"`."""
    from flows.settings import load_settings
    from warehouse.db import Warehouse

    wh = Warehouse.from_settings(load_settings())
    con = wh.reader(sandboxed=True)
    for snap in wh.snapshots(con)[-limit:]:
        typer.echo(f"{snap['snapshot']:>6}  {snap['time']:%Y-%m-%d %H:%M:%S}  {snap['changes']}")
