"""Benchmark: validate a full-size warehouse (1.28M images, 1.5M image texts) with every suite.

Measured: `expectations.runner.validate` (narrow frames read at one snapshot, per-row facts computed
by DuckDB, Great Expectations evaluating every expectation) against the naive baseline, measured in
the same run: each suite reads its tables with a full `SELECT *` into pandas, derives the same
columns with pandas, and runs the same Great Expectations suite. Each mode runs in its own process
so that its peak memory (max RSS) is its own; both must report identical outcomes.

    .venv/bin/python bench/validate.py [--images 1280000] [--texts 1500000] [--keep DIR]

Goal: all suites in under 20 s with a peak under 4 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOAL_S = 20.0
GOAL_RSS_GIB = 4.0


# -- synthetic warehouse ----------------------------------------------------------------------------
def build_warehouse(directory: Path, images: int, texts: int) -> tuple[str, str]:
    """A DuckLake warehouse with `images` images over the 1000 classes and `texts` image texts."""
    from warehouse.db import Warehouse

    catalog, data = f"sqlite:{directory / 'catalog.sqlite'}", str(directory / "data") + "/"
    wh = Warehouse(catalog, data)

    def fill(con):
        con.execute(
            """
            INSERT INTO images (image_id, wnid, split, path, bytes, mtime, width, height, format, mode,
                                sha256, source, ingested_at, run_id)
            SELECT c.wnid || '_' || i, c.wnid, CASE WHEN i % 25 = 0 THEN 'val' ELSE 'train' END,
                   '/data/imagenet/train/' || c.wnid || '/' || c.wnid || '_' || i || '.JPEG',
                   20000 + i % 90000, 1.6e9 + i, 100 + i % 400, 80 + i % 350, 'JPEG', 'RGB',
                   sha256(i::VARCHAR), 'folder:/data/imagenet', now(), 'bench-ingest'
            FROM range($n) r(i)
            JOIN classes c ON c.class_index = i % 1000
            """,
            {"n": images},
        )
        con.execute(
            """
            INSERT INTO class_texts (text_id, wnid, source, text, url, fetched_at, run_id)
            SELECT md5('wordnet' || wnid), wnid, 'wordnet', gloss, NULL, now(), 'bench-harvest' FROM classes
            """
        )
        con.execute(
            """
            INSERT INTO image_texts (text_id, image_id, source, field, text, raw_text, junk, url, fetched_at, run_id)
            SELECT md5('t' || i), c.wnid || '_' || (i % $images),
                   ['imagenet-captions', 'flickr', 'embedded'][1 + i % 3],
                   ['title', 'description', 'tags'][1 + (i // 3) % 3],
                   txt, '<b>' || txt || '</b>', NULL,
                   'https://www.flickr.com/photos/' || i, now(), 'bench-harvest'
            FROM (
                SELECT i, 'a photo number ' || i || ' of ' || repeat('something quite typical ', 1 + i % 6) AS txt
                FROM range($n) r(i)
            ) t
            JOIN classes c ON c.class_index = (i % $images) % 1000
            """,
            {"n": texts, "images": images},
        )

    wh.write(fill)
    wh.close()
    return catalog, data


# -- naive baseline ---------------------------------------------------------------------------------
def naive_frames(con, snapshot: int):
    """Each suite's frame the naive way: SELECT * into pandas, the derived columns by pandas."""
    import pandas as pd

    def table(name: str) -> pd.DataFrame:
        # name comes from the fixed list of suite tables below
        return con.execute(f"SELECT * FROM {name} AT (VERSION => $s)", {"s": snapshot}).df()

    def dup(frame: pd.DataFrame, cols: list[str]):
        return frame[cols].duplicated(keep=False)

    def classes():
        f, texts = table("classes"), table("class_texts")
        f["duplicate_class_index"] = f["class_index"].where(dup(f, ["class_index"]))
        f["duplicate_wnid"] = f["wnid"].where(dup(f, ["wnid"]))
        f["class_texts"] = f["wnid"].map(texts.groupby("wnid").size()).fillna(0).astype("int64")
        return f

    def images():
        f, cls = table("images"), table("classes")
        f["duplicate_image_id"] = f["image_id"].where(dup(f, ["image_id"]))
        f["duplicate_path"] = f["path"].where(dup(f, ["path"]))
        f["unknown_wnid"] = f["wnid"].where(~f["wnid"].isin(cls["wnid"]))
        classes_per_hash = f.groupby("sha256")["wnid"].transform("nunique")
        f["sha256_in_other_class"] = f["sha256"].where(classes_per_hash > 1)
        return f

    def class_texts():
        f, cls = table("class_texts"), table("classes")
        f["text_length"] = text_length(f["text"])
        f["duplicate_text_id"] = f["text_id"].where(dup(f, ["text_id"]))
        key = dup(f, ["wnid", "source", "text"])
        f["duplicate_key"] = (f["wnid"] + " " + f["source"] + " " + f["text"].str[:60]).where(key)
        f["unknown_wnid"] = f["wnid"].where(~f["wnid"].isin(cls["wnid"]))
        return f

    def image_texts():
        f, img = table("image_texts"), table("images")
        f["text_length"] = text_length(f["text"])
        f["duplicate_text_id"] = f["text_id"].where(dup(f, ["text_id"]))
        key = dup(f, ["image_id", "source", "field", "text"])
        f["duplicate_key"] = (
            f["image_id"] + " " + f["source"] + " " + f["field"] + " " + f["text"].str[:60]
        ).where(key)
        f["unknown_image_id"] = f["image_id"].where(~f["image_id"].isin(img["image_id"]))
        return f

    def text_length(text):
        starts_blank = text.str[:1] <= " "
        return text.str.len().where(~starts_blank, text.str.strip(" ").str.len())

    def empty(name):
        return lambda: table(name)

    return {
        "classes": classes,
        "images": images,
        "class_texts": class_texts,
        "image_texts": image_texts,
        "text_scores": empty("text_scores"),
        "models": empty("models"),
    }


# -- one mode, in its own process -------------------------------------------------------------------
def run_mode(mode: str, catalog: str, data: str) -> dict:
    from warehouse.db import Warehouse

    started = time.perf_counter()
    from expectations import runner

    runner.gx_context()  # imports Great Expectations (timed apart: both modes pay it)
    import_s = time.perf_counter() - started
    con = Warehouse(catalog, data).reader()
    snapshot = con.execute("SELECT id FROM current_snapshot()").fetchone()[0]
    started, cpu = time.perf_counter(), time.process_time()
    if mode == "smart":
        report = runner.validate(con, None, snapshot, run_id="bench")
    else:
        context = runner.gx_context()
        frames = naive_frames(con, snapshot)
        runs = []
        for suite in runner.suites(None):
            frame = frames[suite.name]()
            runs.append(runner.run_suite(context, suite, frame, "bench"))
            del frame
        report = runner.Report(run_id="bench", snapshot=snapshot, runs=runs)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "mode": mode,
        "seconds": seconds,
        "cpu_s": cpu,
        "import_s": import_s,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "outcomes": {o.key: [o.success, o.unexpected_count, o.element_count] for o in report.outcomes},
        "suites": {r.suite: round(r.seconds, 2) for r in report.runs},
        "success": report.success,
    }


def child(mode: str, catalog: str, data: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--mode", mode, "--catalog", catalog, "--data", data],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "GX_ANALYTICS_ENABLED": "false"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_280_000)
    parser.add_argument("--texts", type=int, default=1_500_000)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the warehouse in this folder")
    parser.add_argument("--mode", choices=["smart", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--catalog", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.catalog, args.data)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        if (directory / "catalog.sqlite").exists():
            catalog, data = f"sqlite:{directory / 'catalog.sqlite'}", str(directory / "data") + "/"
        else:
            catalog, data = build_warehouse(directory, args.images, args.texts)
        print(
            f"warehouse: {args.images:,} images, {args.texts:,} image texts in {time.perf_counter() - started:.1f}s"
        )
        smart = child("smart", catalog, data)
        naive = child("naive", catalog, data)

    same = smart["outcomes"] == naive["outcomes"]
    for r in (smart, naive):
        print(
            f"{r['mode']:>6}: {r['seconds']:6.2f}s wall, {r['cpu_s']:6.2f}s CPU, peak {r['peak_rss_gib']:.2f} GiB  "
            f"(+{r['import_s']:.1f}s importing Great Expectations)  per suite {r['suites']}"
        )
    print(
        f"speed-up vs naive SELECT * per suite: {naive['seconds'] / smart['seconds']:.2f}x; "
        f"memory {naive['peak_rss_gib'] / smart['peak_rss_gib']:.2f}x less"
    )
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"outcomes identical: {same}; all blocking expectations passed: {smart['success']}")
    ok = same and smart["seconds"] < GOAL_S and smart["peak_rss_gib"] < GOAL_RSS_GIB
    print(f"goal (< {GOAL_S:.0f}s, < {GOAL_RSS_GIB:.0f} GiB): {'met' if ok else 'NOT met'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
