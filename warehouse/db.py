"""Open the DuckLake warehouse, apply the schema, and hand out connections.

One `Warehouse` per flow run (or CLI command). Writers serialise on a lock file next to a SQLite
catalog (SQLite allows one writer; without the lock, concurrent commits answer "database is
locked") and retry transient commit conflicts; readers attach the catalog READ_ONLY and are never
blocked because the SQLite catalog runs in WAL mode.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import duckdb

log = logging.getLogger(__name__)

ALIAS = "wh"
SCHEMA_DIR = Path(__file__).with_name("schema")
QUERY_DIR = Path(__file__).with_name("queries")
T = TypeVar("T")
# Advisory lock id that serialises warehouse writers on a Postgres catalog ("imtext" in ASCII).
PG_LOCK_KEY = 0x696D74657874

_EXTENSIONS = {
    "ducklake": "duckdb_extension_ducklake",
    "sqlite_scanner": "duckdb_extension_sqlite_scanner",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
}
# Errors worth retrying: another writer committed first, or the SQLite catalog was busy.
_TRANSIENT = ("database is locked", "conflict", "busy", "could not serialize", "deadlock")


class WarehouseError(RuntimeError):
    """A warehouse that cannot be opened or used, with a message meant for the user."""


def extension_path(name: str) -> Path:
    """The .duckdb_extension file shipped by the pinned duckdb-extension-* package."""
    module = importlib.import_module(_EXTENSIONS[name])
    found = sorted(Path(module.__file__).parent.glob(f"extensions/*/{name}.duckdb_extension"))
    if not found:
        raise WarehouseError(f"the package {_EXTENSIONS[name]} holds no {name}.duckdb_extension")
    return found[-1]


def load_query(name: str) -> str:
    """SQL text of warehouse/queries/<name>.sql."""
    return (QUERY_DIR / f"{name}.sql").read_text()


@contextlib.contextmanager
def arrow_views(con: duckdb.DuckDBPyConnection, **tables) -> Iterator[duckdb.DuckDBPyConnection]:
    """Each keyword seen by `con` as a view of the Arrow table (or polars frame) given, until exit.

    For several statements over the same staged rows in one transaction; the views are dropped
    on the way out even when a statement fails, so a retried transaction registers them afresh.
    """
    registered: list[str] = []
    try:
        for name, table in tables.items():
            con.register(name, _as_arrow(table))
            registered.append(name)
        yield con
    finally:
        for name in registered:
            con.unregister(name)


def insert_arrow(con: duckdb.DuckDBPyConnection, sql: str, /, params=None, **tables) -> int:
    """Run the statements of `sql` over `tables` (see `arrow_views`); the count the last one reports.

    `params` are bound to every statement. An INSERT or MERGE reports the rows it wrote; a
    statement that reports nothing (or NULL) counts 0.
    """
    with arrow_views(con, **tables):
        row = None
        for statement in con.extract_statements(sql):
            row = con.execute(statement, params or []).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _as_arrow(table):
    """An Arrow table for `con.register`: polars frames are converted, anything else passes through."""
    to_arrow = getattr(table, "to_arrow", None)
    return to_arrow() if callable(to_arrow) else table


def is_transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _TRANSIENT)


# (catalog, data path) of warehouses found moved in this process: they attach with OVERRIDE_DATA_PATH.
_MOVED: set[tuple[str, str]] = set()


@dataclass
class Warehouse:
    """A DuckLake warehouse named by its catalog (`sqlite:PATH` or `postgres:DSN`) and data path."""

    catalog: str
    data_path: str
    threads: int | None = None
    memory_limit: str | None = None
    # True when the data path is the default one inside IMTEXT_HOME: a home that was moved or
    # copied as a whole then opens where it now is (DuckLake keeps file paths relative to it).
    follows_home: bool = False
    _con: duckdb.DuckDBPyConnection | None = field(default=None, repr=False)
    _pg: object | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings) -> Warehouse:
        follows = (
            getattr(settings, "warehouse_data", None) is None and getattr(settings, "warehouse", None) is None
        )
        return cls(catalog=settings.catalog, data_path=settings.data_path, follows_home=follows)

    # -- catalog kinds -------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.catalog.split(":", 1)[0]

    @property
    def sqlite_path(self) -> Path | None:
        return Path(self.catalog.split(":", 1)[1]) if self.kind == "sqlite" else None

    @property
    def lock_path(self) -> Path | None:
        path = self.sqlite_path
        return path.with_name(path.name + ".lock") if path else None

    # -- connections ---------------------------------------------------------------------------
    def _new_connection(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if self.kind not in ("sqlite", "postgres"):
            raise WarehouseError(
                f"IMTEXT_WAREHOUSE={self.catalog!r}: expected 'sqlite:PATH' or 'postgres:DSN'"
            )
        config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
        if self.threads:
            config["threads"] = self.threads
        if self.memory_limit:
            config["memory_limit"] = self.memory_limit
        con = duckdb.connect(config=config)
        con.execute(f"LOAD '{extension_path('ducklake')}'")
        con.execute(f"LOAD '{extension_path(self.kind + '_scanner')}'")
        if self.sqlite_path is not None:
            if read_only and not self.sqlite_path.exists():
                raise WarehouseError(
                    f"no warehouse at {self.sqlite_path}: run a command that writes (imtext ingest, imtext demo)"
                )
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            if not self.data_path.startswith(("s3://", "gs://", "az://", "r2://", "http")):
                Path(self.data_path).mkdir(parents=True, exist_ok=True)
        # The catalog string and data path are configuration, not user data; DuckDB's ATTACH takes
        # no bound parameters, so quote them as SQL string literals.
        options = [f"DATA_PATH {_literal(self.data_path)}"]
        moved = (self.catalog, self.data_path) in _MOVED
        if moved:  # known from an earlier connection: attach at the new place straight away
            options.append("OVERRIDE_DATA_PATH TRUE")
        if read_only:
            options.append("READ_ONLY")
        attach = f"ATTACH {_literal('ducklake:' + self.catalog)} AS {ALIAS} ({', '.join(options)})"
        for attempt in range(8):
            try:
                with self._lock(enabled=not read_only and attempt == 0):
                    con.execute(attach)
                break
            except duckdb.Error as exc:
                if (
                    self.follows_home
                    and not moved
                    and "does not match existing data path" in str(exc)
                    and attempt < 7
                ):
                    # Said once per process, not on every connection.
                    log.warning("the warehouse moved: its data files are now read from %s", self.data_path)
                    _MOVED.add((self.catalog, self.data_path))
                    moved = True
                    options.append("OVERRIDE_DATA_PATH TRUE")
                    attach = (
                        f"ATTACH {_literal('ducklake:' + self.catalog)} AS {ALIAS} ({', '.join(options)})"
                    )
                    continue
                if not is_transient(exc) or attempt == 7:
                    con.close()
                    raise WarehouseError(f"cannot open the warehouse {self.catalog}: {exc}") from exc
                time.sleep(0.05 * 2**attempt * random.uniform(0.5, 1.5))
        con.execute(f"USE {ALIAS}")
        if self.sqlite_path is not None and not read_only:
            _enable_wal(self.sqlite_path)
        return con

    def reader(self, *, sandboxed: bool = False) -> duckdb.DuckDBPyConnection:
        """A new read-only connection; write statements through it fail.

        `sandboxed` is for SQL a person types (`imtext sql`): once the catalog is attached, the
        connection reads no file outside the warehouse's data path and its settings are locked, so
        `read_csv('/etc/passwd')` fails and so does the `SET` that would allow it again.
        """
        con = self._new_connection(read_only=True)
        if sandboxed:
            try:
                _sandbox(con, self.data_path)
            except duckdb.Error as exc:
                con.close()
                raise WarehouseError(f"cannot restrict the warehouse connection: {exc}") from exc
        return con

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The shared read-write connection of this handle (schema applied on first use)."""
        if self._con is None:
            self._con = self._new_connection(read_only=False)
            self.apply_schema(self._con)
        return self._con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor on the read-write connection, for reads from another thread."""
        return self.con.cursor()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._pg is not None:
            self._pg.close()
            self._pg = None

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writes --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self, enabled: bool = True) -> Iterator[None]:
        """The writer lock: a lock file beside a SQLite catalog, an advisory lock in a Postgres one.

        DuckLake has no unique keys, so two writers that both anti-join "no such row yet" would both
        insert it; holding this lock around each write transaction makes the check-then-insert atomic
        across processes and machines.
        """
        if not enabled:
            yield
            return
        if self.kind == "postgres":
            with self._pg_lock():
                yield
            return
        path = self.lock_path
        if path is None:
            yield
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _pg_lock(self) -> Iterator[None]:
        import psycopg2

        dsn = self.catalog.split(":", 1)[1]
        if self._pg is None or self._pg.closed:
            try:
                self._pg = psycopg2.connect(dsn)
            except psycopg2.Error as exc:
                raise WarehouseError(f"cannot reach the Postgres catalog for the writer lock: {exc}") from exc
            self._pg.autocommit = True
        with self._pg.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", [PG_LOCK_KEY])
            try:
                yield
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", [PG_LOCK_KEY])

    def write(self, fn: Callable[[duckdb.DuckDBPyConnection], T], *, attempts: int = 10) -> T:
        """Run `fn(con)` in one transaction (one snapshot), holding the writer lock.

        `fn` must be safe to run again: on a transient conflict the transaction is rolled back and
        `fn` runs again from the start.
        """
        return self._transaction(self.con, fn, attempts)

    def insert_arrow(self, sql: str, /, params=None, **tables) -> int:
        """`insert_arrow` in one write transaction: the staged tables land in one snapshot."""
        return self.write(lambda con: insert_arrow(con, sql, params, **tables))

    def _transaction(
        self, con: duckdb.DuckDBPyConnection, fn: Callable[[duckdb.DuckDBPyConnection], T], attempts: int
    ) -> T:
        last: BaseException | None = None
        for attempt in range(attempts):
            with self._lock():
                con.execute("BEGIN TRANSACTION")
                try:
                    result = fn(con)
                    con.execute("COMMIT")
                    return result
                except BaseException as exc:
                    with contextlib.suppress(duckdb.Error):
                        con.execute("ROLLBACK")
                    if not isinstance(exc, duckdb.Error) or not is_transient(exc) or attempt == attempts - 1:
                        raise
                    last = exc
            delay = min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.5)
            log.debug("warehouse write conflict (%s), retrying in %.2fs", last, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def apply_schema(self, con: duckdb.DuckDBPyConnection | None = None) -> list[str]:
        """Apply every warehouse/schema/NNN_*.sql not applied yet; returns the files applied."""
        con = con or self.con
        files = sorted(SCHEMA_DIR.glob("[0-9][0-9][0-9]_*.sql"))

        def applied(c) -> set[str]:
            c.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name VARCHAR, applied_at TIMESTAMPTZ)")
            return {r[0] for r in c.execute("SELECT name FROM schema_migrations").fetchall()}

        # A cheap read first: nothing to do in the common case, and no snapshot is created.
        try:
            done = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
        except duckdb.CatalogException:
            done = set()
        todo = [f for f in files if f.name not in done]
        if not todo:
            return []

        def migrate(c) -> list[str]:
            new = [f for f in files if f.name not in applied(c)]
            for f in new:
                for statement in _split_sql(f.read_text()):
                    c.execute(statement)
                c.execute("INSERT INTO schema_migrations VALUES (?, now())", [f.name])
            if new:
                _load_classes(c)
            return [f.name for f in new]

        return self._transaction(con, migrate, attempts=10)

    # -- snapshots and maintenance -------------------------------------------------------------
    def current_snapshot(self, con: duckdb.DuckDBPyConnection | None = None) -> int:
        con = con or self.con
        return con.execute(f"SELECT id FROM {ALIAS}.current_snapshot()").fetchone()[0]

    def snapshots(self, con: duckdb.DuckDBPyConnection | None = None):
        """Every snapshot of the warehouse as a list of dicts (id, time, changes)."""
        con = con or self.con
        rows = con.execute(
            "SELECT snapshot_id, snapshot_time, changes::VARCHAR FROM ducklake_snapshots(?) ORDER BY 1",
            [ALIAS],
        ).fetchall()
        return [{"snapshot": r[0], "time": r[1], "changes": r[2]} for r in rows]

    def compact(self, min_files: int = 32) -> bool:
        """Merge small Parquet files once the warehouse holds at least `min_files` live data files."""
        con = self.con
        files = _data_file_count(con)
        if files < min_files:
            return False
        with self._lock():
            con.execute("CALL ducklake_merge_adjacent_files(?)", [ALIAS])
        return True

    def expire_and_clean(
        self, older_than_days: float = 30.0, grace_hours: float = 24.0, dry_run: bool = False
    ) -> dict:
        """Expire old snapshots and delete the Parquet files no snapshot needs any more.

        A snapshot is expired once it is older than `older_than_days`, unless it is the latest or a
        model, training run, curation or export names it (those stay readable with time travel).
        A file is deleted once it was left unused for `grace_hours`, so a reader still pinned to a
        snapshot expired moments ago keeps its files until the next run. `dry_run` only counts.
        Returns the expired snapshot ids and the files deleted (or that would be).
        """
        cutoff = _utc(time.time() - older_than_days * 86400)
        con = self.con
        with self._lock():
            expired = [
                r[0]
                for r in con.execute(
                    load_query("maintenance_expirable"), {"catalog": ALIAS, "cutoff": cutoff}
                ).fetchall()
            ]
            if expired and not dry_run:
                con.execute("CALL ducklake_expire_snapshots(?, versions => ?::UBIGINT[])", [ALIAS, expired])
            files_cutoff = _utc(time.time() - grace_hours * 3600)  # after the expiry: grace 0 is now
            files = con.execute(
                "CALL ducklake_cleanup_old_files(?, older_than => ?, dry_run => ?)",
                [ALIAS, files_cutoff, dry_run],
            ).fetchall()
        outcome = "would be" if dry_run else "were"
        log.info("%d snapshots %s expired, %d files %s deleted", len(expired), outcome, len(files), outcome)
        return {"expired_snapshots": expired, "deleted_files": [r[0] for r in files], "dry_run": dry_run}


def _load_classes(con: duckdb.DuckDBPyConnection) -> None:
    """Load the bundled class catalog into `classes` (anti-join on wnid, so it never duplicates)."""
    from warehouse.catalog import CATALOG_SOURCE, read_classes

    frame = read_classes().to_arrow()  # noqa: F841 - referenced by name in the SQL below
    con.execute(
        """
        INSERT INTO classes
        SELECT f.class_index, f.wnid, f.name, f.lemmas, f.gloss, ?, NULL, now(), 'catalog'
        FROM frame f ANTI JOIN classes c ON c.wnid = f.wnid
        """,
        [CATALOG_SOURCE],
    )


def _data_file_count(con: duckdb.DuckDBPyConnection) -> int:
    meta = f"__ducklake_metadata_{ALIAS}"
    return con.execute(
        f"SELECT count(*) FROM {meta}.ducklake_data_file WHERE end_snapshot IS NULL"
    ).fetchone()[0]


def _sandbox(con: duckdb.DuckDBPyConnection, data_path: str) -> None:
    """No file access but the warehouse's data files, and no setting changed from here on.

    Extensions are loaded and the catalog attached before this; the data path stays readable
    because DuckLake opens its Parquet files through DuckDB's file system on every query. The path
    the catalog itself records is allowed too, in case it was created with another spelling.
    """
    allowed = [data_path]
    with contextlib.suppress(duckdb.Error):
        row = con.execute(
            f"SELECT value FROM __ducklake_metadata_{ALIAS}.ducklake_metadata WHERE key = 'data_path'"
        ).fetchone()
        if row and row[0] and row[0] not in allowed:
            allowed.append(row[0])
    con.execute("SET allowed_directories = ?", [allowed])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _utc(epoch_s: float):
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch_s, dt.UTC)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _split_sql(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _enable_wal(path: Path) -> None:
    """Put the SQLite catalog in WAL mode so readers never wait for a writer (persists in the file)."""
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            db.execute("PRAGMA journal_mode=WAL")
