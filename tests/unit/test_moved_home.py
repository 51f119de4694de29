"""A home moved or copied as a whole opens where it now is; a configured data path is never overridden."""

from __future__ import annotations

import shutil

import pytest


def test_a_copied_home_opens_and_reads_its_own_data(tmp_path, monkeypatch, caplog):
    from flows.settings import load_settings
    from warehouse.db import Warehouse, WarehouseError

    monkeypatch.delenv("IMTEXT_WAREHOUSE", raising=False)
    monkeypatch.delenv("IMTEXT_WAREHOUSE_DATA", raising=False)
    monkeypatch.setenv("IMTEXT_HOME", str(tmp_path / "first"))
    wh = Warehouse.from_settings(load_settings())
    wh.write(lambda c: c.execute("CREATE TABLE notes AS SELECT 'kept' AS word"))
    wh.close()
    shutil.copytree(tmp_path / "first", tmp_path / "second")
    shutil.rmtree(tmp_path / "first")  # the data files now live only in the copy

    monkeypatch.setenv("IMTEXT_HOME", str(tmp_path / "second"))
    moved = Warehouse.from_settings(load_settings())
    assert moved.reader().execute("SELECT word FROM notes").fetchone() == ("kept",)
    moved.write(lambda c: c.execute("INSERT INTO notes VALUES ('added')"))
    assert moved.reader().execute("SELECT count(*) FROM notes").fetchone() == (2,)
    moved.close()
    again = Warehouse.from_settings(load_settings())
    assert again.reader().execute("SELECT count(*) FROM notes").fetchone() == (2,)
    again.close()
    # the move is said once, not on every connection
    assert sum("the warehouse moved" in r.getMessage() for r in caplog.records) == 1

    # an explicitly configured data path that disagrees with the catalog is an error, not a guess
    monkeypatch.setenv("IMTEXT_WAREHOUSE_DATA", str(tmp_path / "elsewhere") + "/")
    with pytest.raises(WarehouseError, match="does not match"):
        Warehouse.from_settings(load_settings()).reader()
