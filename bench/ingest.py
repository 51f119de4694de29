"""Benchmark: `imtext ingest` against a plain loop and `datasets.load_dataset("imagefolder")`.

Generates ImageNet-sized JPEGs (500x375, about 100 KB) once into bench/out/ingest-cache/: a large
tree (10,000 images in 25 class folders) and a small one (2,000 of the same files, hard-linked).
Each method runs as its own process on both trees, so the per-image throughput is
(N_large - N_small) / (t_large - t_small) with start-up cancelled out, and the fixed start-up is
t_small - N_small / rate. Peak memory is the largest process's max RSS (wait4).

Also: the re-run of `imtext ingest` over the unchanged trees (per-image cost against a first run),
and a bulk load of 1.28 million synthetic `images` rows through the ingest write path.

    python bench/ingest.py [--large 10000] [--small 2000] [--classes 25] [--rows 1280000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
CACHE = OUT / "ingest-cache"
PY = sys.executable
IMTEXT = str(Path(PY).with_name("imtext"))

# Real ImageNet-1k wnids for the class folders.
WNIDS = [
    "n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331", "n01498041",
    "n01514668", "n01514859", "n01518878", "n01530575", "n01531178", "n01532829", "n01534433",
    "n01537544", "n01558993", "n01560419", "n01580077", "n01582220", "n01592084", "n01601694",
    "n01608432", "n01614925", "n01616318", "n01622779", "n01629819", "n01630670", "n01631663",
]  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Data


def _base_jpegs(count: int, seed: int = 0) -> list[bytes]:
    """Distinct 500x375 photos-alike (gradient, blocks, noise), about 100 KB at quality 90."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    ramp = np.linspace(0, 255, 500)[None, :, None] * np.ones((375, 1, 3))
    for _ in range(count):
        img = ramp * rng.uniform(0.2, 1.0, 3) + rng.uniform(0, 80, 3)
        for _ in range(6):
            y, x = rng.integers(0, 300), rng.integers(0, 420)
            img[y : y + 75, x : x + 80] = rng.uniform(0, 255, 3)
        img = (img + rng.normal(0, 44, img.shape)).clip(0, 255).astype("uint8")
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _unique(data: bytes, tag: str) -> bytes:
    """The same JPEG with a COM segment naming the file: distinct bytes (and sha256) per file."""
    text = tag.encode()
    return data[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + data[2:]


def make_trees(large: int, small: int, classes: int) -> tuple[Path, Path]:
    """The large and small trees (generated once, reused while their sizes match)."""
    big, little = CACHE / f"large-{large}-{classes}", CACHE / f"small-{small}-{classes}"
    if (big / "done").exists() and (little / "done").exists():
        return big, little
    shutil.rmtree(CACHE, ignore_errors=True)
    bases = _base_jpegs(64)
    wnids = WNIDS[:classes]
    per, small_per = -(-large // classes), -(-small // classes)
    n = 0
    for c, wnid in enumerate(wnids):
        folder, sfolder = big / "train" / wnid, little / "train" / wnid
        folder.mkdir(parents=True)
        sfolder.mkdir(parents=True)
        for k in range(per):
            if n >= large:
                break
            name = f"{wnid}_{k}.JPEG"
            (folder / name).write_bytes(_unique(bases[(c * 7 + k) % len(bases)], f"{wnid}_{k}"))
            if k < small_per:
                os.link(folder / name, sfolder / name)
            n += 1
    (big / "done").touch()
    (little / "done").touch()
    return big, little


def count_images(tree: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(tree / "train"))


# --------------------------------------------------------------------------------------------------
# Methods, each run in a child process: `python bench/ingest.py --method NAME TREE HOME`


def method_plain(tree: Path, home: Path) -> dict:
    """Single process: PIL open + size + sha256 per file, rows collected, one insert at the end."""
    import hashlib

    import pyarrow as pa
    from PIL import Image

    from warehouse.db import Warehouse

    rows = []
    for wnid in sorted(os.listdir(tree / "train")):
        folder = tree / "train" / wnid
        for name in sorted(os.listdir(folder)):
            path = str(folder / name)
            with Image.open(path) as im:
                width, height, fmt, mode = im.width, im.height, im.format, im.mode
            with open(path, "rb") as fh:
                data = fh.read()
            rows.append((name.rsplit(".", 1)[0], wnid, "train", path, len(data), width, height, fmt, mode,
                         hashlib.sha256(data).hexdigest()))  # fmt: skip
    cols = ["image_id", "wnid", "split", "path", "bytes", "width", "height", "format", "mode", "sha256"]
    rows_table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)})
    wh = Warehouse(f"sqlite:{home}/catalog.sqlite", f"{home}/data/")

    def insert(con):
        con.register("rows_table", rows_table)
        con.execute(f"INSERT INTO images ({', '.join(cols)}) SELECT * FROM rows_table")

    wh.write(insert)
    return {"rows": len(rows)}


def method_hf(tree: Path, home: Path) -> dict:
    """`datasets.load_dataset("imagefolder")` into a private cache (it reads bytes, decodes nothing)."""
    os.environ["HF_DATASETS_CACHE"] = str(home / "hf")
    import datasets

    datasets.disable_progress_bars()
    ds = datasets.load_dataset(
        "imagefolder", data_dir=str(tree / "train"), split="train", cache_dir=str(home / "hf")
    )
    return {"rows": ds.num_rows}


def method_bulk(rows: int, home: Path) -> dict:
    """1.28M synthetic `images` rows through the ingest write path (timed: the write alone)."""
    import polars as pl

    from tasks.images import write_batch
    from warehouse.db import Warehouse

    wh = Warehouse(f"sqlite:{home}/catalog.sqlite", f"{home}/data/")
    wh.con  # noqa: B018 - schema applied before timing
    ids, cls = pl.col("i"), (pl.col("i") % 1000).cast(pl.String).str.zfill(8)
    images = pl.DataFrame({"i": pl.int_range(0, rows, eager=True)}).select(
        path=pl.format("/data/imagenet/train/n{}/n{}_{}.JPEG", cls, cls, ids),
        image_id=pl.format("n{}_{}", cls, ids),
        wnid=pl.format("n{}", cls),
        split=pl.lit("train"),
        bytes=(ids * 7919 % 200_000).cast(pl.Int64),
        mtime=pl.lit(1.7e9),
        width=pl.lit(500, pl.Int32),
        height=pl.lit(375, pl.Int32),
        format=pl.lit("JPEG"),
        mode=pl.lit("RGB"),
        sha256=pl.format("{}{}", pl.lit("f" * 48), ids.cast(pl.String).str.zfill(16)),
    )
    empty = pl.DataFrame(schema={"path": pl.String, "reason": pl.String, "detail": pl.String,
                                 "bytes": pl.Int64, "mtime": pl.Float64})  # fmt: skip
    started, cpu = time.perf_counter(), time.process_time()
    counts = write_batch(wh, images, empty, [], "/data/imagenet", "bench")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"rows": counts["added"], "write_s": seconds, "write_cpu_s": cpu}


def child(method: str, target: str, home: str) -> None:
    home_path = Path(home)
    home_path.mkdir(parents=True, exist_ok=True)
    if method == "plain":
        result = method_plain(Path(target), home_path)
    elif method == "hf":
        result = method_hf(Path(target), home_path)
    else:
        result = method_bulk(int(target), home_path)
    print("RESULT " + json.dumps(result))


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run a command; wall seconds, peak RSS (MB) of its largest process, and its RESULT line."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-2000:]}\n{err[-4000:]}")
    result = {"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result.update(json.loads(line[7:]))
        if line.startswith("ingested "):
            result["flow_s"] = float(line.rsplit(" in ", 1)[1].split("s ", 1)[0])
    return result


def run_method(name: str, tree: Path, scratch: Path, env: dict) -> dict:
    home = scratch / f"{name}-{tree.name}"
    if name == "imtext":
        env = dict(env, IMTEXT_HOME=str(home))
        first = timed([IMTEXT, "ingest", "--source", str(tree)], env)
        again = timed([IMTEXT, "ingest", "--source", str(tree)], env)
        return {"first": first, "rerun": again}
    return {"first": timed([PY, __file__, "--method", name, str(tree), str(home)], env)}


def rate(large: dict, small: dict, n_large: int, n_small: int) -> tuple[float, float]:
    """Images per second with start-up cancelled out, and the fixed start-up in seconds."""
    per_image = (large["seconds"] - small["seconds"]) / (n_large - n_small)
    return 1.0 / per_image, small["seconds"] - n_small * per_image


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--large", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--classes", type=int, default=25)
    parser.add_argument("--rows", type=int, default=1_280_000)
    parser.add_argument("--method", nargs=3, metavar=("NAME", "TARGET", "HOME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        child(*args.method)
        return

    big, little = make_trees(args.large, args.small, args.classes)
    n_large, n_small = count_images(big), count_images(little)
    for tree in (big, little):  # warm the page cache: every method reads from memory
        for dirpath, _, files in os.walk(tree):
            for f in files:
                with open(os.path.join(dirpath, f), "rb") as fh:
                    fh.read()
    sizes = [os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(big / "train") for f in fs]
    print(f"trees: {n_large} and {n_small} JPEGs, 500x375, mean {sum(sizes) / len(sizes) / 1000:.0f} KB, "
          f"{args.classes} class folders; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")  # fmt: skip

    env = dict(os.environ, PREFECT_HOME=str(OUT / "prefect-home"), PREFECT_LOGGING_LEVEL="WARNING",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
               PYTHONPATH=str(ROOT))  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    scratch = Path(tempfile.mkdtemp(prefix="ingest-bench-", dir=OUT))
    try:
        # Prefect's first start in a fresh PREFECT_HOME migrates its database: not ingest start-up.
        timed([IMTEXT, "ingest", "--source", str(little)], dict(env, IMTEXT_HOME=str(scratch / "warm")))
        results = {}
        for name in ("plain", "hf", "imtext"):
            results[name] = {t.name: run_method(name, t, scratch, env) for t in (big, little)}
        bulk = timed([PY, __file__, "--method", "bulk", str(args.rows), str(scratch / "bulk")], env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\n{'method':<34}{'images/s':>10}{'start-up s':>12}{'large s':>10}{'small s':>10}{'peak MB':>10}")
    rates = {}
    for name, label in (("plain", "plain loop (PIL+sha256, 1 proc)"), ("hf", 'load_dataset("imagefolder")'),
                        ("imtext", "imtext ingest (CLI)")):  # fmt: skip
        large, small = results[name][big.name]["first"], results[name][little.name]["first"]
        r, start = rate(large, small, n_large, n_small)
        rates[name] = r
        peak = max(large["rss_mb"], small["rss_mb"])
        print(
            f"{label:<34}{r:>10,.0f}{start:>12.1f}{large['seconds']:>10.1f}{small['seconds']:>10.1f}{peak:>10.0f}"
        )
    large, small = results["imtext"][big.name], results["imtext"][little.name]
    flow_rate = (n_large - n_small) / (large["first"]["flow_s"] - small["first"]["flow_s"])
    rerun_rate, rerun_start = rate(large["rerun"], small["rerun"], n_large, n_small)
    print(f"{'imtext ingest, inside the flow':<34}{flow_rate:>10,.0f}{'':>12}"
          f"{large['first']['flow_s']:>10.1f}{small['first']['flow_s']:>10.1f}")  # fmt: skip
    print(f"{'imtext ingest, re-run unchanged':<34}{rerun_rate:>10,.0f}{rerun_start:>12.1f}"
          f"{large['rerun']['seconds']:>10.1f}{small['rerun']['seconds']:>10.1f}"
          f"{max(large['rerun']['rss_mb'], small['rerun']['rss_mb']):>10.0f}")  # fmt: skip
    print()
    print(f"imtext / plain loop: {rates['imtext'] / rates['plain']:.2f}x   (goal >= 1.6x on 2 cores)")
    print(f"imtext / imagefolder: {rates['imtext'] / rates['hf']:.2f}x   (goal > 1x)")
    print(f"re-run cost per image: {100 * rates['imtext'] / rerun_rate:.1f}% of a first run   (goal < 10%)")
    print(f"bulk load of {bulk['rows']:,} synthetic rows: {bulk['write_s']:.2f} s, process peak "
          f"{bulk['rss_mb']:.0f} MB   (goal < 3 s)")  # fmt: skip


if __name__ == "__main__":
    main()
