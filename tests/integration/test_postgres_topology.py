"""The docker-compose topology without Docker, on the local PostgreSQL (127.0.0.1:5432, trust auth):
Prefect server on Postgres with API auth, the work pool and a worker, and a deployment run that
writes to a warehouse whose DuckLake catalog is in Postgres. Each test gets fresh databases, dropped
afterwards. Skipped, with the reason, only where no PostgreSQL answers.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.test_rest_api import (
    assert_completed,
    base_env,
    sample_tree,
    serve,
    trigger,
    wait_for_run,
    warehouse_rows,
)

pytestmark = pytest.mark.slow

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def admin_connection():
    import psycopg2

    try:
        con = psycopg2.connect(dbname="test", connect_timeout=3, **PG)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {PG['host']}:{PG['port']} is unreachable: {str(exc).strip()}")
    con.autocommit = True
    return con


@contextlib.contextmanager
def scratch_databases(*prefixes: str) -> Iterator[list[str]]:
    """Names for fresh databases (created only for the first prefix; the others are left to the
    code under test to create), all dropped at the end."""
    from psycopg2 import sql

    con = admin_connection()
    names = [f"{p}_{uuid.uuid4().hex[:10]}" for p in prefixes]
    try:
        with con.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(names[0])))
        yield names
    finally:
        with con.cursor() as cur:
            for name in names:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        con.close()


def test_prefect_on_postgres_runs_a_deployment_into_a_postgres_catalog(tmp_path):
    sample = sample_tree(tmp_path / "imagenet")
    with scratch_databases("imtext_it_prefect", "imtext_it_catalog") as (prefect_db, catalog_db):
        env = base_env(tmp_path)
        catalog = f"postgres:dbname={catalog_db} host={PG['host']} port={PG['port']} user={PG['user']}"
        env.update(
            PREFECT_API_DATABASE_CONNECTION_URL=(
                f"postgresql+asyncpg://{PG['user']}@{PG['host']}:{PG['port']}/{prefect_db}"
            ),
            PREFECT_SERVER_API_AUTH_STRING="admin:it-secret",
            IMTEXT_WAREHOUSE=catalog,
            IMTEXT_WAREHOUSE_DATA=str(tmp_path / "lake") + "/",
        )
        with serve(env, only="ingest", auth=("admin", "it-secret")) as served:
            # imtext serve created the catalog database it was pointed at.
            assert "created the warehouse catalog database" in served.output()
            assert "warehouse ready (postgres catalog)" in served.output()
            # Auth is on: no credentials, no API (the health probe stays open).
            import requests

            assert requests.get(f"{served.api}/deployments/name/ingest/ingest", timeout=10).status_code == 401
            assert requests.get(f"{served.api}/health", timeout=10).status_code == 200

            flow_run_id = trigger(served, "ingest", "ingest", {"source": str(sample["root"])})
            assert_completed(served, wait_for_run(served, flow_run_id))

        # The flow run is recorded in Prefect's Postgres database, not in a SQLite file.
        assert not (tmp_path / "prefect" / "prefect.db").exists()
        import psycopg2

        with contextlib.closing(psycopg2.connect(dbname=prefect_db, **PG)) as con, con.cursor() as cur:
            cur.execute("SELECT state_type FROM flow_run WHERE id = %s", [flow_run_id])
            assert cur.fetchone() == ("COMPLETED",)
        rows = warehouse_rows(
            catalog,
            env["IMTEXT_WAREHOUSE_DATA"],
            "SELECT count(*), count(DISTINCT image_id) FROM images WHERE run_id = ?",
            [flow_run_id],
        )
        assert rows == [(sample["images"], sample["images"])]
