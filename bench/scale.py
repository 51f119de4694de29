"""Benchmark: the whole pipeline on an ImageNet-shaped workload, stage by stage, and how each stage grows.

At `--fraction F` (1.0 = ImageNet-1k: 1,281,167 train + 50,000 val images in 1000 classes, and
ImageNet-Captions' ~460,000 records) the workload is built once under --cache: small distinct JPEGs
in the ImageNet folder layout (the row counts are real, the per-image cost is bench/ingest.py's
business), `LOC_val_solution.csv` for the flat val folder, and a captions JSON with Flickr-like
titles, descriptions and tags (camera file names, descriptions repeated across photos, empty fields,
HTML, URLs and number tags as junk; many texts name the class, many do not).

Then each stage runs through the CLI, as a user runs it, into a fresh IMTEXT_HOME (a warmed-up
PREFECT_HOME, so that Prefect's database migrations are not charged to the first stage):

    ingest -> harvest classes (WordNet, offline) -> harvest images --captions -> validate
    -> train (tiny-roberta capped by --max-train-samples; the CLI caps the baseline too)
    -> train-baseline (`--no-transformer`: the baseline alone, on every text)
    -> curate --scorer baseline -> export parquet

Per stage: wall seconds, CPU seconds (the command and every process it waited for: workers and
its local Prefect server), peak RSS of the largest process, peak RSS of the whole process tree
(sampled twice a second), rows and rows/s. With several fractions it prints how each stage's wall
time grows per 10x of data (10 ** the log-log slope: 10x = linear; between small fractions fixed
costs make it look better than linear). The baseline for each stage's growth is the smallest
fraction, measured in the same run.

With --rerun every stage runs a second time right after its first run, over the data it has just
written, and that wall time is printed as a share of the first run's (goal: under 5%). The re-run
follows its own stage at once because the two train stages ask for different runs: run as a second
pass over the whole pipeline, each would make its own run the latest again, which is a change that
curate and export must follow. --rerun-only JSON re-runs, as such a second pass, the stages of the
warehouses an earlier run left under --work.

    .venv/bin/python bench/scale.py --fraction 0.01 --fraction 0.03 [--max-train-samples 2000] [--rerun]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"
FULL = {"train": 1_281_167, "val": 50_000, "captions": 460_000}
PAGE = os.sysconf("SC_PAGE_SIZE")

# --------------------------------------------------------------------------------------------------
# The workload

GENERIC_TAGS = (
    "nikon canon d80 2008 2009 vacation travel summer winter nature zoo family trip city park "
    "beach macro bokeh flickr geotagged sony explore 50mm friends holiday"
).split()
OFF_TOPIC = [
    "Our trip to grandma's house last weekend.",
    "First try with the new lens, not bad for a beginner.",
    "Taken from the hotel window in the morning light.",
    "Happy birthday to my little brother!",
    "This was a long day, but worth it.",
    "Testing the macro mode of my old compact camera.",
]
BOILERPLATE = [  # the same description under many photos
    "Uploaded from my phone",
    "All rights reserved. Do not use without permission.",
    "Please visit my website for more photos",
    "Photo taken with a Canon EOS 400D",
]


def _jpeg_bases(count: int = 8) -> list[bytes]:
    from PIL import Image

    out = []
    for i in range(count):
        buf = io.BytesIO()
        Image.new("RGB", (48, 36), (i * 30 % 256, 120, 200 - i * 20)).save(buf, "JPEG", quality=80)
        out.append(buf.getvalue())
    return out


def _unique(data: bytes, tag: str) -> bytes:
    """The JPEG with a comment segment naming it: distinct bytes and sha256 per file."""
    text = tag.encode()
    return data[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + data[2:]


def _caption(rng: random.Random, row: dict, filename: str) -> dict:
    lemmas = [s.strip() for s in row["lemmas"].split(",") if s.strip()]
    name = rng.choice(lemmas)
    roll = rng.random()
    if roll < 0.15:
        title = f"{rng.choice(['IMG_', 'DSC', 'DSCN', 'P'])}{rng.randrange(10000):04d}"  # camera file name
    elif roll < 0.5:
        title = rng.choice([f"My {name}", f"{name} at the zoo", f"A {name}", f"{name.title()}!", name])
    elif roll < 0.8:
        title = rng.choice(["Untitled", "Summer 2008", "Weekend", "Day 3", "Home", ""])
    else:
        title = ""
    roll = rng.random()
    if roll < 0.35:
        description = ""
    elif roll < 0.5:
        description = rng.choice(BOILERPLATE)
    elif roll < 0.75:
        words = row["gloss"].split()
        description = f"A {name}: " + " ".join(words[: rng.randint(5, 25)])
    elif roll < 0.9:
        description = rng.choice(OFF_TOPIC)
    elif roll < 0.95:
        description = f'Seen on <a href="http://example.com/{rng.randrange(99999)}">my blog</a> &amp; more'
    else:
        description = f"http://www.flickr.com/photos/user{rng.randrange(9999)}/"  # bare URL: junk
    tags = rng.sample(GENERIC_TAGS, rng.randint(0, 5)) + rng.sample(
        lemmas, min(len(lemmas), rng.randint(0, 2))
    )
    if rng.random() < 0.1:
        tags.append(str(rng.randrange(100000)))  # bare number: junk
    return {
        "filename": filename,
        "wnid": row["wnid"],
        "title": title,
        "description": description,
        "tags": tags,
    }


def build_workload(cache: Path, fraction: float, seed: int = 0) -> dict:
    """The image tree and captions file for `fraction` (built once; reused while `done` exists)."""
    from warehouse.catalog import read_classes

    root = cache / f"f{fraction:g}"
    meta_path = root / "workload.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    classes = read_classes().to_dicts()
    n_train, n_val = round(FULL["train"] * fraction), round(FULL["val"] * fraction)
    n_captions = min(round(FULL["captions"] * fraction), n_train)
    bases = _jpeg_bases()
    rng = random.Random(seed)
    tree = root / "imagenet"
    train_files: list[tuple[str, dict]] = []
    for i in range(n_train):
        row = classes[i % len(classes)]
        name = f"{row['wnid']}_{i // len(classes)}.JPEG"
        train_files.append((name, row))
    for row in classes:
        (tree / "train" / row["wnid"]).mkdir(parents=True, exist_ok=True)
    for i, (name, row) in enumerate(train_files):
        (tree / "train" / row["wnid"] / name).write_bytes(_unique(bases[i % len(bases)], name))
    (tree / "val").mkdir(parents=True, exist_ok=True)
    labels = io.StringIO()
    writer = csv.writer(labels)
    writer.writerow(["ImageId", "PredictionString"])
    for i in range(n_val):
        row = classes[rng.randrange(len(classes))]
        image_id = f"ILSVRC2012_val_{i + 1:08d}"
        (tree / "val" / f"{image_id}.JPEG").write_bytes(_unique(bases[i % len(bases)], image_id))
        writer.writerow([image_id, f"{row['wnid']} 1 1 30 20"])
    (tree / "LOC_val_solution.csv").write_text(labels.getvalue())
    picked = sorted(rng.sample(range(n_train), n_captions))
    records = [_caption(rng, train_files[i][1], train_files[i][0]) for i in picked]
    (root / "captions.json").write_text(json.dumps(records))
    meta = {
        "fraction": fraction,
        "train_images": n_train,
        "val_images": n_val,
        "caption_records": n_captions,
        "tree": str(tree),
        "captions": str(root / "captions.json"),
        "build_s": round(time.perf_counter() - started, 1),
    }
    meta_path.write_text(json.dumps(meta))
    return meta


# --------------------------------------------------------------------------------------------------
# Running and measuring one stage


def _tree_rss(pid: int) -> int:
    """Bytes resident in `pid` and every process below it (read from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[-1].split()
            parents.setdefault(int(fields[1]), []).append(int(entry.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            pass
        todo.extend(parents.get(p, []))
    return total


def run_stage(argv: list[str], env: dict[str, str], log: Path) -> dict:
    """Wall, CPU (incl. waited-for children), peak RSS of the largest process and of the tree."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                peak[0] = max(peak[0], _tree_rss(process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        sampler.join()
    return {
        "wall_s": time.perf_counter() - started,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "peak_tree_mb": peak[0] / 2**20,
        "exit": process.returncode,
        "load": load,
    }


def command_floor(env: dict[str, str], work: Path) -> float:
    """A command's fixed cost without Prefect: the best of three `imtext sql "select 1"`."""
    return min(
        run_stage([sys.executable, "-m", "flows.cli", "sql", "select 1"], env, work / "floor.log")["wall_s"]
        for _ in range(3)
    )


def count(env: dict[str, str], sql: str) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "sql", sql, "--format", "json"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = json.loads(done.stdout)
    return int(next(iter(rows[0].values()))) if rows else 0


def stages(meta: dict, work: Path, max_train_samples: int) -> list[tuple[str, list[str], str]]:
    """(name, imtext arguments, SQL counting the rows the stage handled)."""
    return [
        ("ingest", ["ingest", "--source", meta["tree"]], "SELECT count(*) FROM images"),
        (
            "harvest-classes",
            ["harvest", "classes", "--classes", "all", "--no-wikipedia"],
            "SELECT count(*) FROM class_texts",
        ),
        (
            "harvest-captions",
            ["harvest", "images", "--captions", meta["captions"]],
            "SELECT count(*) FROM image_texts",
        ),
        (
            "validate",
            ["validate"],
            "SELECT (SELECT count(*) FROM images) + (SELECT count(*) FROM image_texts) + (SELECT count(*) FROM class_texts)",
        ),
        (
            "train",
            [
                "train",
                "--base-model",
                "tiny-roberta",
                "--epochs",
                "1",
                "--max-train-samples",
                str(max_train_samples),
                "--frozen-encoder",
                "none",
                "--allow-invalid",
            ],
            f"SELECT least(count(*), {int(max_train_samples)}) FROM image_texts",
        ),  # fmt: skip
        (
            "train-baseline",
            ["train", "--no-transformer", "--frozen-encoder", "none", "--allow-invalid"],
            "SELECT count(*) FROM image_texts",
        ),  # fmt: skip
        ("curate", ["curate", "--scorer", "baseline"], "SELECT count(*) FROM image_texts"),
        (
            "export",
            ["export", "--format", "parquet", "--out", str(work / "export")],
            "SELECT count(*) FROM images",
        ),
    ]


def base_env(prefect_home: Path, home: Path) -> dict[str, str]:
    from bench.startup import base_env as offline_env

    return offline_env(prefect_home) | {
        "IMTEXT_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def warm_prefect(env: dict[str, str]) -> None:
    """One empty flow run: creates and migrates Prefect's database outside the timed stages."""
    code = (
        "from flows.commands.common import prefect_env; prefect_env()\n"
        "from prefect import flow\n"
        "flow(name='warm-up')(lambda: None)()\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True)


def run_fraction(fraction: float, args) -> dict:
    meta = build_workload(args.cache, fraction)
    work = args.work / f"f{fraction:g}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = base_env(args.work / "prefect", work / "home")
    warm_prefect(env)
    print(
        f"\nfraction {fraction:g}: {meta['train_images']:,} train + {meta['val_images']:,} val images, "
        f"{meta['caption_records']:,} caption records (built in {meta['build_s']}s, cached in {args.cache})",
        flush=True,
    )
    print(
        f"{'stage':<18}{'wall s':>9}{'CPU s':>9}{'RSS MB':>9}{'tree MB':>9}{'rows':>11}{'rows/s':>10}  load"
    )
    results, again = {}, {}
    for name, cli_args, rows_sql in stages(meta, work, args.max_train_samples):
        r = run_stage([sys.executable, "-m", "flows.cli", *cli_args], env, work / f"{name}.log")
        r["rows"] = count(env, rows_sql)
        r["rows_per_s"] = r["rows"] / r["wall_s"]
        results[name] = r
        flag = "" if r["exit"] == 0 else f"  exit {r['exit']} (see {work / (name + '.log')})"
        print(
            f"{name:<18}{r['wall_s']:9.1f}{r['cpu_s']:9.1f}{r['peak_rss_mb']:9.0f}{r['peak_tree_mb']:9.0f}"
            f"{r['rows']:11,}{r['rows_per_s']:10,.0f}  {r['load']:.1f}{flag}",
            flush=True,
        )
        if r["exit"] not in (0, 1) or (r["exit"] == 1 and name != "validate"):
            print((work / f"{name}.log").read_text()[-3000:])
            break
        if args.rerun:  # the same command at once, over the data it has just written
            a = run_stage([sys.executable, "-m", "flows.cli", *cli_args], env, work / f"{name}-again.log")
            a["share"] = a["wall_s"] / r["wall_s"]
            again[name] = a
            print(
                f"{'  again':<18}{a['wall_s']:9.1f}{a['cpu_s']:9.1f}{a['peak_rss_mb']:9.0f}{a['peak_tree_mb']:9.0f}"
                f"{'':21}  {a['load']:.1f}  {100 * a['share']:.1f}% of the first run",
                flush=True,
            )
    total_wall = sum(r["wall_s"] for r in results.values())
    total_cpu = sum(r["cpu_s"] for r in results.values())
    peak = max(r["peak_tree_mb"] for r in results.values())
    print(f"{'total':<18}{total_wall:9.1f}{total_cpu:9.1f}{'':9}{peak:9.0f}")
    out = {"workload": meta, "stages": results}
    if args.rerun:
        floor = command_floor(env, work)
        first_total = sum(results[n]["wall_s"] for n in again)
        again_total = sum(a["wall_s"] for a in again.values())
        print(
            f"re-run at once, every stage: {again_total:.1f} s of {first_total:.1f} s "
            f"({100 * again_total / first_total:.1f}%); floor: imtext sql {floor:.1f} s"
        )
        out["rerun"] = {"floor_s": floor, "stages": again, "mode": "each stage again at once"}
    return out


def rerun_fraction(fraction: float, first: dict, args) -> dict:
    """Every stage once more over the unchanged warehouse of `fraction`: its cost against the first run.

    A re-run still pays a command's fixed cost (Python, imports, Prefect); `imtext sql "select 1"`,
    timed here too, is that floor without Prefect, so the share above it is printed as well.
    """
    meta, results = first["workload"], first["stages"]
    work = args.work / f"f{fraction:g}"
    env = base_env(args.work / "prefect", work / "home")
    floor = command_floor(env, work)
    print(f"\nfraction {fraction:g}, re-run over unchanged data (goal: under 5% of the first run per stage)")
    print(
        f"{'stage':<18}{'first s':>9}{'again s':>9}{'share':>8}{'CPU s':>8}  (floor: imtext sql {floor:.1f} s)"
    )
    again = {}
    for name, cli_args, _ in stages(meta, work, args.max_train_samples):
        if name not in results:
            continue
        r = run_stage([sys.executable, "-m", "flows.cli", *cli_args], env, work / f"{name}-again.log")
        r["share"] = r["wall_s"] / results[name]["wall_s"]
        again[name] = r
        flag = "" if r["exit"] in (0, 1) else f"  exit {r['exit']}"
        print(
            f"{name:<18}{results[name]['wall_s']:9.1f}{r['wall_s']:9.1f}{100 * r['share']:7.1f}%{r['cpu_s']:8.1f}{flag}",
            flush=True,
        )
    first_total = sum(results[n]["wall_s"] for n in again)
    again_total = sum(r["wall_s"] for r in again.values())
    print(f"{'total':<18}{first_total:9.1f}{again_total:9.1f}{100 * again_total / first_total:7.1f}%")
    return {"floor_s": floor, "stages": again}


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model or platform.processor()}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM, {platform.system()}"


def markdown_table(results: dict) -> str:
    """The README's table: per stage and fraction wall / CPU s / tree MB, CPU growth per 10x, re-run share."""
    fractions = sorted(results, key=float)
    small, large = fractions[0], fractions[-1]
    head = " | ".join(f"F={float(f):g}: wall s / CPU s / tree MB" for f in fractions)
    lines = [
        f"| stage | {head} | CPU per 10x | re-run at F={float(large):g} |",
        "|---" * (len(fractions) + 3) + "|",
    ]
    totals = {f: [0.0, 0.0, 0.0] for f in fractions}
    for name, base in results[small]["stages"].items():
        cells = []
        for f in fractions:
            r = results[f]["stages"].get(name)
            if r is None:
                cells.append("")
                continue
            cells.append(f"{r['wall_s']:,.0f} / {r['cpu_s']:,.0f} / {r['peak_tree_mb']:,.0f}")
            totals[f][0] += r["wall_s"]
            totals[f][1] += r["cpu_s"]
            totals[f][2] = max(totals[f][2], r["peak_tree_mb"])
        growth = ""
        if len(fractions) > 1 and name in results[large]["stages"]:
            ratio = results[large]["stages"][name]["cpu_s"] / base["cpu_s"]
            growth = f"{10 ** (math.log(ratio) / math.log(float(large) / float(small))):.1f}x"
        again = results[large].get("rerun", {}).get("stages", {}).get(name)
        share = f"{100 * again['share']:.1f}% ({again['wall_s']:.1f} s)" if again else ""
        lines.append(f"| {name} | {' | '.join(cells)} | {growth} | {share} |")
    total = " | ".join(f"**{t[0]:,.0f} / {t[1]:,.0f} / {t[2]:,.0f}**" for t in totals.values())
    lines.append(f"| **total** | {total} | | |")
    return "\n".join(lines)


def print_growth(results: dict, fractions: list[float]) -> None:
    """Per stage, how wall and CPU seconds grow against the smallest fraction, and per 10x of data.

    On a shared machine the load can differ between fractions; CPU seconds are the steadier measure.
    """
    small = fractions[0]
    print(
        f"\ngrowth against fraction {small:g} in this run; per 10x of data (10 ** log-log slope, 10 = linear):"
    )
    head = "".join(f"{f'wall {f:g}/{small:g}':>16}{'CPU':>7}" for f in fractions[1:])
    print(f"{'stage':<18}{head}{'wall/10x':>10}{'CPU/10x':>9}")
    for name, base in results[small]["stages"].items():
        cells, slopes = [], None
        for f in fractions[1:]:
            if (r := results[f]["stages"].get(name)) is None:
                continue
            wall, cpu = r["wall_s"] / base["wall_s"], r["cpu_s"] / base["cpu_s"]
            cells.append(f"{wall:16.2f}{cpu:7.2f}")
            slopes = (math.log(wall) / math.log(f / small), math.log(cpu) / math.log(f / small))
        tail = f"{10 ** slopes[0]:10.1f}{10 ** slopes[1]:9.1f}" if slopes else ""
        print(f"{name:<18}{''.join(cells)}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fraction", type=float, action="append", help="share of ImageNet (repeatable); default 0.01"
    )
    parser.add_argument("--max-train-samples", type=int, default=2000, help="cap of the transformer's texts")
    parser.add_argument("--cache", type=Path, default=OUT / "scale-cache", help="where workloads are built")
    parser.add_argument(
        "--work", type=Path, default=OUT / "scale-run", help="warehouses and logs of the runs"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--rerun", action="store_true", help="each stage again right after its first run (goal < 5%%)"
    )
    parser.add_argument(
        "--rerun-only",
        type=Path,
        default=None,
        metavar="JSON",
        help="re-run the stages of an earlier run (its --json and --work) without a first pass",
    )
    args = parser.parse_args()
    print(f"machine: {machine()}; load {os.getloadavg()[0]:.1f} at start", flush=True)
    if args.rerun_only:
        earlier = json.loads(args.rerun_only.read_text())
        for key, first in earlier["results"].items():
            if args.fraction and float(key) not in args.fraction:
                continue
            first["rerun"] = rerun_fraction(float(key), first, args)
        args.rerun_only.write_text(json.dumps(earlier, indent=1, default=str))
        print("\n" + markdown_table(earlier["results"]))
        return
    fractions = sorted(set(args.fraction or [0.01]))
    results = {f: run_fraction(f, args) for f in fractions}
    if len(fractions) > 1:
        print_growth(results, fractions)
    print(f"\nload {os.getloadavg()[0]:.1f} at the end\n")
    print(markdown_table(results))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
