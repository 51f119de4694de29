"""`imtext sql`: the warehouse tables and nothing else, and every failure one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

IMTEXT = str(Path(sys.executable).with_name("imtext"))


@pytest.fixture
def warehouse(wh):
    """A warehouse with its schema applied (the 1000 classes loaded), closed for readers."""
    wh.con
    wh.close()
    return wh


def run_sql(*args: str):
    from flows.cli import app

    return CliRunner().invoke(app, ["sql", *args])


def assert_one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def test_tables_and_snapshots_still_answer(warehouse):
    result = run_sql("SELECT count(*) AS n FROM classes", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["n", "1000"]
    result = run_sql("SELECT count(*) AS n FROM classes AT (VERSION => 1)", "-f", "csv")
    assert result.stdout.splitlines() == ["n", "1000"]
    result = run_sql("SELECT count(*) AS n FROM ducklake_snapshots('wh')", "--format", "json")
    assert result.exit_code == 0, result.output
    assert '"n": ' in result.stdout


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM \"read_blob\"('/etc/hostname')",
        "SELECT * FROM system.main.read_text('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM sqlite_scan('{catalog}', 'ducklake_snapshot')",
        "SELECT * FROM sqlite_attach('{catalog}')",
        "SELECT * FROM query('SELECT * FROM read_text(''/etc/hostname'')')",
        "SELECT * FROM ducklake_merge_adjacent_files('wh')",
        "SELECT * FROM ducklake_cleanup_old_files('wh')",
        "SELECT * FROM ducklake_expire_snapshots('wh', older_than => now())",
        "SELECT * FROM parquet_metadata('{catalog}')",
    ],
)
def test_files_other_databases_and_maintenance_are_refused(warehouse, query):
    result = run_sql(query.format(catalog=warehouse.sqlite_path))
    assert_one_line_error(result, "refused")


@pytest.mark.parametrize(
    "query",
    [
        "COPY classes TO '/tmp/x.csv'",
        "ATTACH '/tmp/other.db' AS other",
        "SET enable_external_access = true",
        "INSTALL httpfs",
        "LOAD httpfs",
    ],
)
def test_statements_that_write_or_reach_out_are_refused(warehouse, query):
    assert_one_line_error(run_sql(query), "read-only")


def test_names_in_strings_and_comments_are_not_calls(warehouse):
    from flows.commands.sql import called_functions

    query = "SELECT 'read_csv(' AS a, upper(name) -- glob(\nFROM classes WHERE \"name\" = 'x'"
    assert called_functions(query) == {"upper"}
    result = run_sql("SELECT 'read_csv(' AS a -- glob(\n FROM classes LIMIT 1", "-f", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["a", "read_csv("]


def test_sandboxed_reader_reads_tables_but_no_other_file(warehouse, tmp_path):
    import duckdb

    outside = tmp_path / "outside.csv"
    outside.write_text("a,b\n1,2\n")
    open_con = warehouse.reader()
    assert open_con.execute(f"SELECT count(*) FROM '{outside}'").fetchone() == (1,)
    open_con.close()

    con = warehouse.reader(sandboxed=True)
    try:
        assert con.execute("SELECT count(*) FROM classes").fetchone() == (1000,)
        assert con.execute("SELECT count(*) FROM classes AT (VERSION => 1)").fetchone() == (1000,)
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"SELECT count(*) FROM '{outside}'").fetchall()
        with pytest.raises(duckdb.PermissionException):
            con.execute("SELECT * FROM read_text('/etc/hostname')").fetchall()
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute("SET enable_external_access = true")
    finally:
        con.close()


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_error_while_rows_are_fetched_is_one_line(warehouse, fmt):
    result = run_sql("SELECT * FROM range(3) WHERE error('x') IS NULL", "--format", fmt)
    assert_one_line_error(result, "x")


def test_error_while_fetching_through_the_installed_command(warehouse):
    """The real console script: exit 2, one line on stderr, and Prefect never imported."""
    probe = (
        "import sys\n"
        "sys.argv = ['imtext', 'sql', \"SELECT * FROM range(3) WHERE error('x') IS NULL\"]\n"
        "try:\n"
        "    from flows.cli import app\n"
        "    app()\n"
        "finally:\n"
        "    print('prefect imported' if any(m.startswith('prefect') for m in sys.modules) else 'no prefect',"
        " file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == ["error: Invalid Input Error: x", "no prefect"]
