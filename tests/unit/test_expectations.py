"""Every expectation catches its defect: seed exactly one defect into a clean warehouse, validate
that table's suite at the new snapshot, and see that check (and only it) fail.

One warehouse serves the module: each test writes its defect, validates, then puts the touched
tables back as they were (so every test starts from the clean state).
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from expectations import SUITE_NAMES, runner
from warehouse.db import Warehouse

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
TABLES = ("classes", "images", "class_texts", "image_texts", "models", "text_scores")

CLEAN = [
    """INSERT INTO images (image_id, wnid, split, path, bytes, width, height, format, sha256, source, ingested_at, run_id)
       SELECT w || '_' || n, w, CASE WHEN n = 1 THEN 'train' ELSE 'val' END,
              '/data/' || w || '/' || w || '_' || n || '.JPEG', 1000, 100, 80, 'JPEG',
              sha256(w || '_' || n), 'folder:/data', now(), 'seed'
       FROM (VALUES ('n01440764'), ('n01443537')) a(w), (VALUES (1), (2)) b(n)""",
    """INSERT INTO class_texts (text_id, wnid, source, field, text, url, fetched_at, run_id)
       SELECT 'ct-' || wnid, wnid, 'wordnet', 'gloss', gloss, NULL, now(), 'seed' FROM classes""",
    """INSERT INTO class_texts (text_id, wnid, source, field, text, url, fetched_at, run_id)
       VALUES ('ct-wiki', 'n01440764', 'wikipedia', 'summary', 'The tench is a freshwater fish.',
               'https://en.wikipedia.org/wiki/Tench', now(), 'seed')""",
    """INSERT INTO image_texts (text_id, image_id, source, field, text, raw_text, url, fetched_at, run_id)
       SELECT 'it-' || image_id, image_id, 'flickr', 'title', 'a photo of ' || image_id,
              'a photo of ' || image_id, NULL, now(), 'seed' FROM images""",
    """INSERT INTO models (model_id, base_model, fold, folds, path, metrics, created_at, run_id)
       VALUES ('m-fold0', 'tiny', 0, 2, '/models/m-fold0', '{"top1": 0.5}', now(), 'seed')""",
    """INSERT INTO text_scores (text_id, model_id, p_true, true_rank, pred_wnid, pred_p, kept, scored_at, run_id)
       SELECT text_id, 'm-fold0', 0.8, 1, split_part(image_id, '_', 1), 0.8, true, now(), 'seed'
       FROM image_texts""",
]

# A valid extra row per table; a defect overrides one value.
ROWS = {
    "images": dict(
        image_id="n01440764_9",
        wnid="n01440764",
        split="train",
        path="/data/n01440764/n01440764_9.JPEG",
        width=10,
        height=12,
        sha256="9" * 64,
        run_id="defect",
    ),
    "class_texts": dict(
        text_id="ct-new",
        wnid="n01443537",
        source="file:notes.json",
        field="description",
        text="a large goldfish",
        fetched_at=NOW,
        run_id="defect",
    ),
    "image_texts": dict(
        text_id="it-new",
        image_id="n01440764_1",
        source="imagenet-captions",
        field="description",
        text="a green fish in a net",
        raw_text="a green fish in a net",
        fetched_at=NOW,
        run_id="defect",
    ),
    "text_scores": dict(
        text_id="it-n01440764_2",
        model_id="m-fold1",
        p_true=0.4,
        true_rank=2,
        pred_wnid="n01443537",
        pred_p=0.5,
        kept=False,
        run_id="defect",
    ),
    "models": dict(
        model_id="m-fold1",
        base_model="tiny",
        path="/models/m-fold1",
        metrics='{"top1": 0.4}',
        run_id="defect",
    ),
}


def row(table: str, **changes):
    """A defect: insert the table's valid extra row with `changes` applied."""
    values = {**ROWS[table], **changes}
    columns = ", ".join(values)  # names come from ROWS above
    marks = ", ".join("?" for _ in values)
    return lambda con: con.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", list(values.values()))


def copy_of(table: str, key: str, value: str, **changes):
    """A defect: insert a copy of an existing row with `changes` applied (literal SQL values)."""
    sets = ", ".join(f"{v} AS {k}" for k, v in changes.items())
    return lambda con: con.execute(
        f"INSERT INTO {table} SELECT * REPLACE ({sets}) FROM {table} WHERE {key} = ?", [value]
    )


def sql(*statements: str):
    return lambda con: [con.execute(s) for s in statements]


# (suite, check, defect, other checks that must fail with it)
CASES = [
    ("classes", "exactly_1000_rows", sql("DELETE FROM classes WHERE class_index = 999"), ()),
    (
        "classes",
        "class_index_present",
        sql("UPDATE classes SET class_index = NULL WHERE class_index = 999"),
        (),
    ),
    ("classes", "class_index_unique", sql("UPDATE classes SET class_index = 0 WHERE class_index = 999"), ()),
    (
        "classes",
        "class_index_in_0_999",
        sql("UPDATE classes SET class_index = 1000 WHERE class_index = 999"),
        (),
    ),
    (
        "classes",
        "wnid_present",
        sql("UPDATE classes SET wnid = NULL WHERE class_index = 999"),
        ("has_class_texts",),  # a class without a wnid has no texts either
    ),
    ("classes", "wnid_unique", sql("UPDATE classes SET wnid = 'n01440764' WHERE class_index = 999"), ()),
    (
        "classes",
        "wnid_format",
        sql(
            "UPDATE classes SET wnid = 'N15075141' WHERE wnid = 'n15075141'",
            "UPDATE class_texts SET wnid = 'N15075141' WHERE wnid = 'n15075141'",
        ),
        (),
    ),
    ("classes", "gloss_present", sql("UPDATE classes SET gloss = NULL WHERE class_index = 3"), ()),
    ("classes", "gloss_not_blank", sql("UPDATE classes SET gloss = '  ' WHERE class_index = 3"), ()),
    ("classes", "name_present", sql("UPDATE classes SET name = NULL WHERE class_index = 3"), ()),
    ("classes", "has_class_texts", sql("DELETE FROM class_texts WHERE wnid = 'n15075141'"), ()),
    ("images", "has_rows", sql("DELETE FROM images"), ()),
    ("images", "image_id_present", row("images", image_id=None), ()),
    ("images", "image_id_unique", row("images", image_id="n01440764_1"), ()),
    ("images", "path_present", row("images", path=None), ()),
    ("images", "path_unique", row("images", path="/data/n01440764/n01440764_1.JPEG"), ()),
    ("images", "wnid_present", row("images", wnid=None), ()),
    ("images", "wnid_in_classes", row("images", wnid="n99999999"), ()),
    ("images", "split_present", row("images", split=None), ()),
    ("images", "split_known", row("images", split="holdout"), ()),
    ("images", "width_present", row("images", width=None), ()),
    ("images", "height_present", row("images", height=None), ()),
    ("images", "width_positive", row("images", width=0), ()),
    ("images", "height_positive", row("images", height=-3), ()),
    ("images", "sha256_present", row("images", sha256=None), ()),
    ("images", "sha256_format", row("images", sha256="ABC123"), ()),
    (
        "images",
        "sha256_single_class",
        copy_of(
            "images",
            "image_id",
            "n01440764_1",
            image_id="'n01443537_9'",
            wnid="'n01443537'",
            path="'/data/n01443537/n01443537_9.JPEG'",
        ),
        (),
    ),
    ("class_texts", "has_rows", sql("DELETE FROM class_texts"), ()),
    ("class_texts", "text_id_present", row("class_texts", text_id=None), ()),
    ("class_texts", "text_id_unique", row("class_texts", text_id="ct-n01440764"), ()),
    ("class_texts", "wnid_present", row("class_texts", wnid=None), ()),
    ("class_texts", "wnid_in_classes", row("class_texts", wnid="n99999999"), ()),
    ("class_texts", "text_present", row("class_texts", text=None), ()),
    ("class_texts", "text_not_empty", row("class_texts", text="   "), ()),
    ("class_texts", "text_length_within_bounds", row("class_texts", text="x" * 2001), ()),
    (
        "class_texts",
        "no_duplicate_text",
        copy_of("class_texts", "text_id", "ct-wiki", text_id="'ct-again'"),
        (),
    ),
    ("class_texts", "source_present", row("class_texts", source=None), ()),
    ("class_texts", "source_known", row("class_texts", source="myspace"), ()),
    ("class_texts", "fetched_at_present", row("class_texts", fetched_at=None), ()),
    ("class_texts", "run_id_present", row("class_texts", run_id=None), ()),
    ("image_texts", "has_rows", sql("DELETE FROM image_texts"), ()),
    ("image_texts", "text_id_present", row("image_texts", text_id=None), ()),
    ("image_texts", "text_id_unique", row("image_texts", text_id="it-n01440764_1"), ()),
    ("image_texts", "image_id_present", row("image_texts", image_id=None), ()),
    ("image_texts", "image_id_in_images", row("image_texts", image_id="n01440764_404"), ()),
    ("image_texts", "field_present", row("image_texts", field=None), ()),
    ("image_texts", "text_present", row("image_texts", text=None), ()),
    ("image_texts", "text_not_empty", row("image_texts", text=""), ()),
    ("image_texts", "text_length_within_bounds", row("image_texts", text="y " * 1001), ()),
    (
        "image_texts",
        "no_duplicate_text",
        copy_of("image_texts", "text_id", "it-n01440764_1", text_id="'it-again'"),
        (),
    ),
    ("image_texts", "source_present", row("image_texts", source=None), ()),
    ("image_texts", "source_known", row("image_texts", source="myspace"), ()),
    ("image_texts", "fetched_at_present", row("image_texts", fetched_at=None), ()),
    ("image_texts", "run_id_present", row("image_texts", run_id=None), ()),
    ("text_scores", "text_id_present", row("text_scores", text_id=None), ()),
    ("text_scores", "model_id_present", row("text_scores", model_id=None), ()),
    ("text_scores", "one_row_per_text_and_model", row("text_scores", model_id="m-fold0"), ()),
    ("text_scores", "p_true_present", row("text_scores", p_true=None), ()),
    ("text_scores", "p_true_in_0_1", row("text_scores", p_true=1.5), ()),
    ("text_scores", "true_rank_at_least_1", row("text_scores", true_rank=0), ()),
    ("text_scores", "pred_p_in_0_1", row("text_scores", pred_p=-0.1), ()),
    ("text_scores", "kept_present", row("text_scores", kept=None), ()),
    ("text_scores", "text_id_known", row("text_scores", text_id="it-nowhere"), ()),
    ("text_scores", "pred_wnid_in_classes", row("text_scores", pred_wnid="n99999999"), ()),
    ("models", "model_id_present", row("models", model_id=None), ()),
    ("models", "model_id_unique", row("models", model_id="m-fold0"), ()),
    ("models", "path_present", row("models", path=None), ()),
    ("models", "base_model_present", row("models", base_model=None), ()),
    ("models", "metrics_are_json", row("models", metrics="{top1: 0.4"), ()),
]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A warehouse where every suite passes, its tables saved to put back after each defect."""
    directory = tmp_path_factory.mktemp("expectations")
    wh = Warehouse(f"sqlite:{directory / 'catalog.sqlite'}", str(directory / "data") + "/")
    wh.write(sql(*CLEAN))
    saved = {t: wh.con.execute(f"SELECT * FROM {t}").to_arrow_table() for t in TABLES}
    yield SimpleNamespace(wh=wh, snapshot=wh.current_snapshot(), saved=saved)
    wh.close()


def validate_defect(clean, suite: str, defect, touches: tuple[str, ...] = ()) -> runner.Report:
    """Write `defect`, validate `suite` at the new snapshot, then put the touched tables back.

    A defect touches the suite's own tables (classes defects may touch class_texts too) and `touches`.
    """
    wh = clean.wh
    wh.write(defect)
    try:
        return runner.validate(wh.con, suite, wh.current_snapshot())
    finally:
        tables = {*suite.split(","), *touches}
        if "classes" in tables:
            tables.add("class_texts")

        def restore(con):
            for name in tables:
                con.execute(f"DELETE FROM {name}")
                con.register("saved_rows", clean.saved[name])
                con.execute(f"INSERT INTO {name} SELECT * FROM saved_rows")
                con.unregister("saved_rows")

        wh.write(restore)


def failed(report: runner.Report) -> set[str]:
    return {o.expectation for o in report.outcomes if not o.success}


def test_clean_warehouse_passes_every_suite(clean):
    report = runner.validate(clean.wh.con, None, clean.snapshot)
    assert [r.suite for r in report.runs] == list(SUITE_NAMES)
    assert not [r.suite for r in report.runs if r.skipped]
    assert failed(report) == set()
    assert report.success
    images = next(r for r in report.runs if r.suite == "images")
    assert images.rows == 4
    assert all(o.element_count == 4 for o in images.outcomes)


def test_every_check_has_a_defect_test():
    covered = {(suite, check) for suite, check, _, _ in CASES}
    declared = {(s.name, c.name) for s in runner.suites(None) for c in s.checks}
    assert covered == declared


@pytest.mark.parametrize(
    ("suite", "check", "defect", "also"), CASES, ids=[f"{s}.{c}" for s, c, _, _ in CASES]
)
def test_defect_is_caught(clean, suite, check, defect, also):
    report = validate_defect(clean, suite, defect)
    assert failed(report) == {check, *also}
    spec = runner.suites(suite)[0]
    assert {o.expectation: o.blocking for o in report.outcomes}[check] == spec.check(check).blocking
    assert report.success == (not any(spec.check(name).blocking for name in (check, *also)))


def test_duplicates_report_every_row_and_the_key(clean):
    report = validate_defect(clean, "images", row("images", image_id="n01440764_1"))
    outcome = next(o for o in report.outcomes if o.expectation == "image_id_unique")
    assert (outcome.unexpected_count, outcome.element_count) == (2, 5)
    assert outcome.details["unexpected_sample"] == ["n01440764_1", "n01440764_1"]
    assert report.failed_blocking == ["images.image_id_unique"]


def test_optional_suites_are_skipped_while_empty(clean):
    report = validate_defect(
        clean, "text_scores,models", sql("DELETE FROM text_scores", "DELETE FROM models")
    )
    assert [(r.suite, r.skipped) for r in report.runs] == [
        ("text_scores", "text_scores is empty"),
        ("models", "models is empty"),
    ]
    assert report.outcomes == [] and report.success


def test_an_empty_warehouse_only_warns(clean):
    report = validate_defect(
        clean,
        "images,class_texts,image_texts",
        sql(*(f"DELETE FROM {t}" for t in TABLES[1:])),
        touches=TABLES[1:],
    )
    assert report.success
    assert sorted(report.failed_warnings) == [
        "class_texts.has_rows",
        "image_texts.has_rows",
        "images.has_rows",
    ]


def test_the_suite_reads_its_pinned_snapshot(clean):
    before = clean.snapshot
    report = validate_defect(clean, "images", row("images", image_id=None))
    assert not report.success
    again = runner.validate(clean.wh.con, "images", before)
    assert again.success and again.snapshot == before


def test_unknown_suite_is_an_input_error():
    from tasks.common.errors import InputError

    with pytest.raises(InputError, match="unknown suite nope"):
        runner.suites("images,nope")


def test_results_are_stored_once(clean):
    report = runner.validate(clean.wh.con, "classes", clean.snapshot, run_id="run-store")
    assert runner.store(clean.wh, report) == len(report.outcomes) == len(runner.suites("classes")[0].checks)
    assert runner.store(clean.wh, report) == 0
    rows = clean.wh.con.execute(
        "SELECT count(*), bool_and(success), min(snapshot), count(DISTINCT validated_at) "
        "FROM validation_results WHERE run_id = 'run-store'"
    ).fetchone()
    assert rows == (len(report.outcomes), True, clean.snapshot, 1)


def test_summary_markdown_lists_failures_first():
    report = runner.Report(
        run_id="r1",
        snapshot=7,
        runs=[
            runner.SuiteRun(
                suite="images",
                rows=3,
                outcomes=[
                    runner.Outcome(
                        "images", "sha256_single_class", False, False, 2, 3, {"unexpected_sample": ["ab"]}
                    ),
                    runner.Outcome(
                        "images", "image_id_unique", True, False, 2, 3, {"unexpected_sample": ["a|b"]}
                    ),
                    runner.Outcome("images", "path_present", True, True, 0, 3, {}),
                ],
            ),
            runner.SuiteRun(suite="models", rows=0, skipped="models is empty"),
        ],
    )
    text = runner.summary_markdown(report)
    assert text.startswith("# Validation FAILED")
    assert "| images | 3 | 3 | 1 | 1 |" in text
    assert "skipped: models is empty" in text
    assert text.index("images.image_id_unique") < text.index("images.sha256_single_class")
    assert "a\\|b" in text


OFFLINE_PROBE = """
import socket, sys
from pathlib import Path

def refuse(*args, **kwargs):
    raise OSError(f"network access attempted: {args[:2]}")

socket.getaddrinfo = refuse
socket.socket.connect = lambda self, address: refuse(address)
socket.create_connection = refuse

from expectations import runner
from warehouse.db import Warehouse

out = Path(sys.argv[1])
wh = Warehouse(f"sqlite:{out / 'catalog.sqlite'}", str(out / "data") + "/")
context = runner.gx_context(out / "staging")
report = runner.validate(wh.con, None, wh.current_snapshot(), context=context)
runner.build_data_docs(context, out / "reports" / "data_docs", out / "staging")
print("validated", report.success, len(report.outcomes))
"""


@pytest.mark.slow
def test_great_expectations_stays_offline_quiet_and_out_of_home(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GX_", "IMTEXT_"))}
    env.update(HOME=str(home), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_PROBE, str(work)],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "validated True" in done.stdout
    assert list(home.iterdir()) == []  # nothing written to ~ (no ~/.great_expectations)
    assert "Calculating Metrics" not in done.stderr and "%|" not in done.stderr  # no progress bars
    assert (work / "reports" / "data_docs" / "index.html").exists()
    assert sorted(p.name for p in work.iterdir()) == [
        "catalog.sqlite",
        "catalog.sqlite.lock",
        "data",
        "reports",
    ]
