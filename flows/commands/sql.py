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
    from tasks.errors import InputError

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


@user_errors
def sql(
    query: str = typer.Argument(
        ..., help="DuckDB SQL over the warehouse tables; AT (VERSION => n) reads a snapshot"
    ),
    format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table, csv or json"),
    max_rows: int = typer.Option(10_000, help="rows printed at most in table format"),
) -> None:
    """Run a read-only SQL query on the warehouse; works while flows are writing."""
    from flows.settings import load_settings
    from tasks.errors import InputError
    from warehouse.db import Warehouse

    con = Warehouse.from_settings(load_settings()).reader()
    check_read_only(con, query)
    try:
        relation = con.sql(query)
    except Exception as exc:
        raise InputError(str(exc).splitlines()[0]) from None
    if relation is None:
        return
    if format is OutputFormat.table:
        relation.show(max_rows=max_rows, max_width=200)
        return
    columns = relation.columns
    rows = relation.fetchall()
    if format is OutputFormat.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        json.dump(
            [{c: _jsonable(v) for c, v in zip(columns, r, strict=True)} for r in rows], sys.stdout, indent=1
        )
        sys.stdout.write("\n")


@user_errors
def snapshots(limit: int = typer.Option(20, help="most recent snapshots to list")) -> None:
    """List warehouse snapshots; query one with `imtext sql "... FROM t AT (VERSION => n)"`."""
    from flows.settings import load_settings
    from warehouse.db import Warehouse

    wh = Warehouse.from_settings(load_settings())
    con = wh.reader()
    for snap in wh.snapshots(con)[-limit:]:
        typer.echo(f"{snap['snapshot']:>6}  {snap['time']:%Y-%m-%d %H:%M:%S}  {snap['changes']}")
