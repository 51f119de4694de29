"""warehouse.changes: which tables changed after a snapshot, from DuckLake's snapshot log alone."""

from __future__ import annotations

from warehouse.changes import changed_since, tables_read
from warehouse.db import load_query

READ = ("images", "classes", "models", "curated")


def test_inserts_deletes_and_updates_count_for_their_table_only(wh):
    start = wh.current_snapshot()
    reader = wh.reader()
    assert changed_since(reader, READ, start) == set()
    reader.close()

    wh.write(lambda c: c.execute("INSERT INTO quarantine (path, reason) VALUES ('a', 'x')"))
    after_other = wh.current_snapshot()
    wh.write(
        lambda c: c.execute("INSERT INTO images (image_id, wnid, split) VALUES ('i', 'n01440764', 'train')")
    )
    after_insert = wh.current_snapshot()
    wh.write(lambda c: c.execute("UPDATE classes SET name = name || '!' WHERE class_index = 0"))
    after_update = wh.current_snapshot()
    wh.write(lambda c: c.execute("DELETE FROM models"))  # deletes nothing: no snapshot
    reader = wh.reader()
    try:
        assert changed_since(reader, READ, start) == {"images", "classes"}
        assert changed_since(reader, READ, after_other) == {"images", "classes"}
        assert changed_since(reader, READ, after_insert) == {"classes"}
        assert changed_since(reader, READ, after_update) == set()
        assert changed_since(reader, ["quarantine"], start) == {"quarantine"}
        assert changed_since(reader, [], start) == set()
    finally:
        reader.close()


def test_views_tables_created_and_dropped_count_as_changes(wh):
    start = wh.current_snapshot()
    wh.write(lambda c: c.execute("CREATE OR REPLACE VIEW curated AS SELECT 1 AS image_id"))
    replaced = wh.current_snapshot()
    wh.write(lambda c: c.execute("CREATE TABLE scratch (a INTEGER)"))
    wh.write(lambda c: c.execute("DROP TABLE scratch"))
    con = wh.con
    assert changed_since(con, READ, start) == {"curated"}
    assert changed_since(con, ["scratch", "images"], replaced) == {"scratch"}


def test_merged_files_are_no_change_and_a_gap_in_the_log_is_every_change(wh):
    for n in range(3):
        wh.write(
            lambda c, n=n: c.execute(
                "INSERT INTO models (model_id) SELECT 'm' || range FROM range(?, ? + 3000)",
                [n * 3000, n * 3000],
            )
        )
    written = wh.current_snapshot()
    wh.con.execute("CALL ducklake_merge_adjacent_files('wh')")
    assert wh.current_snapshot() > written  # the merge is a snapshot of its own
    assert changed_since(wh.con, READ, written) == set()

    wh.write(lambda c: c.execute("INSERT INTO quarantine (path, reason) VALUES ('a', 'x')"))
    wh.write(lambda c: c.execute("INSERT INTO quarantine (path, reason) VALUES ('b', 'y')"))
    gone = wh.current_snapshot() - 1
    wh.con.execute("CALL ducklake_expire_snapshots('wh', versions => [?::UBIGINT])", [gone])
    # the expired snapshot changed quarantine only, but the log can no longer say so
    assert changed_since(wh.con, ["images"], written) == {"images"}
    assert changed_since(wh.con, ["images"], gone) == set()
    assert changed_since(wh.con, ["images"], wh.current_snapshot() + 5) == {"images"}


def test_tables_read_follows_views_and_leaves_out_common_table_expressions(wh):
    con = wh.con
    assert tables_read(con, load_query("validate_images")) == {"images", "classes"}
    assert tables_read(con, load_query("curate_export_texts")) == {
        "curated",
        "text_scores",
        "curation_runs",
        "curation_models",
        "image_texts",
        "images",
    }
    assert tables_read(con, "SELECT 1; SELECT * FROM range(3) JOIN models ON true") == {"models"}
