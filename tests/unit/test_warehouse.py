"""The warehouse module: schema, class catalog, snapshots, read-only connections, concurrency."""

from __future__ import annotations

import multiprocessing as mp

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from warehouse.catalog import read_classes
from warehouse.db import Warehouse, WarehouseError, arrow_views, insert_arrow


def test_catalog_has_the_1000_classes_in_standard_order():
    classes = read_classes()
    assert classes.height == 1000
    assert classes["class_index"].to_list() == list(range(1000))
    assert classes["wnid"][0] == "n01440764" and classes["name"][0] == "tench"
    assert classes["wnid"][999] == "n15075141"
    assert classes["wnid"].n_unique() == 1000
    assert classes["gloss"].null_count() == 0


def test_schema_and_classes_load_once(wh):
    con = wh.con
    assert con.execute("SELECT count(*), count(DISTINCT wnid) FROM classes").fetchone() == (1000, 1000)
    snapshot = wh.current_snapshot()
    assert wh.apply_schema() == []
    reopened = Warehouse(wh.catalog, wh.data_path)
    assert reopened.con.execute("SELECT count(*) FROM classes").fetchone() == (1000,)
    assert reopened.current_snapshot() == snapshot
    reopened.close()


def test_reader_refuses_writes_and_reads_snapshots(wh):
    wh.write(lambda c: c.execute("INSERT INTO quarantine (path, reason) VALUES ('a', 'x')"))
    first = wh.current_snapshot()
    wh.write(lambda c: c.execute("INSERT INTO quarantine (path, reason) VALUES ('b', 'y')"))
    reader = wh.reader()
    assert reader.execute("SELECT count(*) FROM quarantine").fetchone() == (2,)
    assert reader.execute(f"SELECT count(*) FROM quarantine AT (VERSION => {first})").fetchone() == (1,)
    with pytest.raises(duckdb.Error, match="read-only"):
        reader.execute("INSERT INTO quarantine (path) VALUES ('c')")
    assert [s["snapshot"] for s in wh.snapshots()][-2:] == [first, first + 1]


def test_failed_write_leaves_nothing(wh):
    def half(con):
        con.execute("INSERT INTO quarantine (path, reason) VALUES ('a', 'x')")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        wh.write(half)
    assert wh.con.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)


def test_bad_catalog_kind_is_a_clear_error(tmp_path):
    with pytest.raises(WarehouseError, match="expected 'sqlite:PATH' or 'postgres:DSN'"):
        Warehouse("mysql:x", str(tmp_path)).con


def _writer(catalog, data, worker, rows):
    wh = Warehouse(catalog, data)
    for i in range(rows):
        wh.write(
            lambda c, i=i: c.execute(
                "INSERT INTO quarantine (path, reason, run_id) VALUES (?, 'concurrency', ?)",
                [f"{worker}/{i}", str(worker)],
            )
        )
    wh.close()


def _reader(catalog, data, rounds, errors):
    wh = Warehouse(catalog, data)
    con = wh.reader()
    try:
        for _ in range(rounds):
            con.execute("SELECT count(*) FROM quarantine").fetchone()
    except Exception as exc:  # reported to the parent
        errors.put(repr(exc))
    wh.close()


@pytest.mark.slow
def test_concurrent_writers_and_readers_lose_nothing(wh):
    wh.con  # schema applied before the race starts
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(wh.catalog, wh.data_path, w, 10)) for w in range(4)]
    procs += [ctx.Process(target=_reader, args=(wh.catalog, wh.data_path, 200, errors)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0] * 6
    assert errors.empty()
    assert wh.reader().execute("SELECT count(*), count(DISTINCT path) FROM quarantine").fetchone() == (40, 40)


@pytest.fixture
def pg_catalog():
    """A fresh database on the local PostgreSQL server, dropped afterwards."""
    import uuid

    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect("dbname=test host=127.0.0.1 user=postgres connect_timeout=3")
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server on 127.0.0.1: {exc}")
    admin.autocommit = True
    name = f"imtext_{uuid.uuid4().hex[:10]}"
    admin.cursor().execute(f"CREATE DATABASE {name}")
    yield f"postgres:dbname={name} host=127.0.0.1 user=postgres"
    admin.cursor().execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()


def test_postgres_catalog(pg_catalog, tmp_path):
    wh = Warehouse(pg_catalog, str(tmp_path / "data") + "/")
    assert wh.con.execute("SELECT count(*) FROM classes").fetchone() == (1000,)
    wh.write(lambda c: c.execute("INSERT INTO quarantine (path, reason) VALUES ('a', 'x')"))
    assert wh.reader().execute("SELECT path FROM quarantine").fetchall() == [("a",)]
    wh.close()


@pytest.mark.slow
def test_postgres_catalog_concurrent_writers_lose_and_duplicate_nothing(pg_catalog, tmp_path):
    data = str(tmp_path / "data") + "/"
    wh = Warehouse(pg_catalog, data)
    wh.con  # schema applied before the race starts
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(pg_catalog, data, w, 5)) for w in range(3)]
    # The same rows from two extra processes through an anti-join: the lock must keep them unique.
    procs += [ctx.Process(target=_idempotent_writer, args=(pg_catalog, data)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0] * 5
    con = wh.reader()
    assert con.execute("SELECT count(*) FROM quarantine WHERE reason = 'concurrency'").fetchone() == (15,)
    assert con.execute("SELECT count(*) FROM quarantine WHERE reason = 'shared'").fetchone() == (10,)
    wh.close()


def _idempotent_writer(catalog, data):
    wh = Warehouse(catalog, data)

    def insert_missing(con):
        con.execute(
            """
            INSERT INTO quarantine (path, reason)
            SELECT 'shared/' || i, 'shared' FROM range(10) t(i)
            WHERE NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.path = 'shared/' || i)
            """
        )

    for _ in range(3):
        wh.write(insert_missing)
    wh.close()


def test_insert_arrow_stages_frames_and_drops_the_views(wh):
    staged = pl.DataFrame({"path": ["a", "b", "c"], "reason": ["x", "y", "x"]})
    sql = """
        -- two statements, one parameter each
        INSERT INTO quarantine (path, reason, run_id) SELECT path, reason, $run FROM batch WHERE reason = 'x';
        INSERT INTO quarantine (path, reason, run_id) SELECT path, reason, $run FROM batch WHERE reason <> 'x'
    """
    assert wh.insert_arrow(sql, {"run": "r1"}, batch=staged) == 1
    rows = wh.con.execute("SELECT path, reason, run_id FROM quarantine ORDER BY path").fetchall()
    assert rows == [("a", "x", "r1"), ("b", "y", "r1"), ("c", "x", "r1")]
    with pytest.raises(duckdb.CatalogException):
        wh.con.execute("SELECT * FROM batch")


def test_arrow_views_are_dropped_when_a_statement_fails(wh):
    con = wh.con
    table = pa.table({"path": ["a"]})
    with pytest.raises(duckdb.Error), arrow_views(con, one=table, two=pl.DataFrame({"path": ["b"]})):
        assert con.execute("SELECT count(*) FROM one, two").fetchone() == (1,)
        con.execute("SELECT no_such_column FROM one")
    for name in ("one", "two"):
        with pytest.raises(duckdb.CatalogException):
            con.execute(f"SELECT * FROM {name}")
    assert insert_arrow(con, "SELECT count(*) FROM staged WHERE path = ?", ["a"], staged=table) == 1
    assert insert_arrow(con, "SELECT NULL FROM staged", staged=table) == 0
