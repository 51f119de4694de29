"""What changed since a snapshot, read from DuckLake's snapshot log: never a row of table data.

A flow that read some tables at snapshot S can skip its work on a later run when no snapshot after
S changed any of them. DuckLake records with every snapshot what it changed (`ducklake_snapshots`,
column `changes`): tables and views created by name, tables inserted into, deleted from, altered
or dropped by id (`__ducklake_metadata_<alias>.ducklake_table` / `ducklake_view` name the ids). The
answer errs on the safe side: whatever the log cannot tell for sure counts as changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import duckdb

from warehouse.db import ALIAS

# Changes that leave every row as it was: merging small files (`imtext maintenance`).
SAME_CONTENT = frozenset({"merge_adjacent"})
# Changes that name a table or view as `schema.name`; every other kind names it by id.
BY_NAME = frozenset({"tables_created", "views_created"})
# Changes that name a table or view by id.
BY_ID = frozenset(
    {
        "tables_inserted_into",
        "tables_deleted_from",
        "inlined_insert",
        "inlined_delete",
        "tables_altered",
        "tables_dropped",
        "views_dropped",
    }
)
# A new schema changes no table that exists.
NO_TABLE = frozenset({"schemas_created"})


def _metadata(name: str) -> str:
    return f"__ducklake_metadata_{ALIAS}.{name}"


def _catalog_names(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Every table and view in the warehouse now: name -> 'table' or 'view'."""
    tables = con.execute(f"SELECT table_name FROM {_metadata('ducklake_table')} WHERE end_snapshot IS NULL")
    names = {r[0]: "table" for r in tables.fetchall()}
    views = con.execute(f"SELECT view_name FROM {_metadata('ducklake_view')} WHERE end_snapshot IS NULL")
    names.update({r[0]: "view" for r in views.fetchall()})
    return names


def _referenced(con: duckdb.DuckDBPyConnection, sql: str) -> set[str]:
    """Names in FROM / JOIN clauses of `sql`, from DuckDB's parser (nothing is bound or run)."""
    found: set[str] = set()
    for statement in con.extract_statements(sql):
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [statement.query]).fetchone()[0])
        if tree.get("error"):
            raise ValueError(f"cannot parse: {tree.get('error_message')}")
        stack = [tree]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if node.get("type") == "BASE_TABLE" and node.get("table_name"):
                    found.add(node["table_name"])
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return found


def tables_read(con: duckdb.DuckDBPyConnection, *queries: str) -> frozenset[str]:
    """The warehouse tables and views `queries` read, each view with the tables it reads in turn.

    Names that are no table or view of the warehouse (common table expressions, table functions)
    are left out; a view's own definition is followed, so a change to what it reads counts.
    """
    catalog = _catalog_names(con)
    views = dict(
        con.execute(
            f"SELECT view_name, sql FROM {_metadata('ducklake_view')} WHERE end_snapshot IS NULL"
        ).fetchall()
    )
    todo = [name for sql in queries for name in _referenced(con, sql) if name in catalog]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if catalog[name] == "view":
            todo.extend(n for n in _referenced(con, views[name]) if n in catalog)
    return frozenset(seen)


def changed_since(con: duckdb.DuckDBPyConnection, names: Iterable[str], snapshot: int) -> set[str]:
    """Which of the tables or views `names` a snapshot after `snapshot` changed; empty when none did.

    Reads only the catalog: the snapshots after `snapshot` and the names of table and view ids.
    Every name counts as changed when the log cannot tell: a snapshot after `snapshot` was expired,
    `snapshot` is newer than the warehouse, or a change of a kind not known here.
    """
    names = set(names)
    if not names:
        return set()
    current = con.execute(f"SELECT id FROM {ALIAS}.current_snapshot()").fetchone()[0]
    if snapshot > current:
        return names
    rows = con.execute(
        "SELECT snapshot_id, changes FROM ducklake_snapshots(?) WHERE snapshot_id > ? ORDER BY snapshot_id",
        [ALIAS, snapshot],
    ).fetchall()
    if len(rows) != current - snapshot:  # snapshot ids are consecutive: a gap is an expired one
        return names
    ids = dict(
        con.execute(f"SELECT table_id::VARCHAR, table_name FROM {_metadata('ducklake_table')}").fetchall()
    )
    ids.update(
        con.execute(f"SELECT view_id::VARCHAR, view_name FROM {_metadata('ducklake_view')}").fetchall()
    )
    changed: set[str] = set()
    for _, changes in rows:
        for kind, values in (changes or {}).items():
            if kind in SAME_CONTENT or kind in NO_TABLE:
                continue
            if kind in BY_NAME:
                touched = {v.rsplit(".", 1)[-1].strip('"') for v in values}
            elif kind in BY_ID and all(v in ids for v in values):
                touched = {ids[v] for v in values}
            else:  # an unknown kind, or an id the catalog no longer names
                return names
            changed |= names & touched
    return changed
