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

    started = time.perf_counter()
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
    return {"rows": len(rows), "work_s": time.perf_counter() - started}


def method_hf(tree: Path, home: Path) -> dict:
    """`datasets.load_dataset("imagefolder")` into a private cache (it reads bytes, decodes nothing)."""
    os.environ["HF_DATASETS_CACHE"] = str(home / "hf")
    import datasets

    datasets.disable_progress_bars()
    started = time.perf_counter()
    ds = datasets.load_dataset(
        "imagefolder", data_dir=str(tree / "train"), split="train", cache_dir=str(home / "hf")
    )
    return {"rows": ds.num_rows, "work_s": time.perf_counter() - started}


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
    result = {"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result.update(json.loads(line[7:]))
        if line.startswith("ingested "):
            result["work_s"] = float(line.rsplit(" in ", 1)[1].split("s ", 1)[0])
    return result


def run_method(name: str, tree: Path, scratch: Path, env: dict, rep: int) -> dict:
    """One measurement of a method on a tree (imtext: a first run, then a re-run on the same home)."""
    home = scratch / f"{name}-{tree.name}-{rep}"
    if name == "imtext":
        env = dict(env, IMTEXT_HOME=str(home))
        first = timed([IMTEXT, "ingest", "--source", str(tree)], env)
        again = timed([IMTEXT, "ingest", "--source", str(tree)], env)
        return {"first": first, "rerun": again}
    return {"first": timed([PY, __file__, "--method", name, str(tree), str(home)], env)}


def best(runs: list[dict]) -> dict:
    """The fastest of repeated measurements, key by key (the machine is shared: noise only adds)."""
    return {k: min(r[k] for r in runs) for k in runs[0]}


def bench_env() -> dict:
    """The environment of every measured command: offline, quiet, a Prefect home of its own."""
    env = dict(os.environ, PREFECT_HOME=str(OUT / "prefect-home"), PREFECT_LOGGING_LEVEL="WARNING",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180", PYTHONPATH=str(ROOT))  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    return env


def rate(large: dict, small: dict, n_large: int, n_small: int, key: str = "work_s") -> dict:
    """Per-image figures with start-up cancelled out (large minus small) and the fixed start-up."""
    per_image = (large[key] - small[key]) / (n_large - n_small)
    cpu = (large["cpu_s"] - small["cpu_s"]) / (n_large - n_small)
    return {
        "rate": 1.0 / per_image,
        "cpu_ms": 1000 * cpu,
        "startup": small["seconds"] - n_small * per_image,
        "peak": max(large["rss_mb"], small["rss_mb"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--large", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--classes", type=int, default=25)
    parser.add_argument("--rows", type=int, default=1_280_000)
    parser.add_argument(
        "--repeat", type=int, default=2, help="measurements per method and tree; the best counts"
    )
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
    cpus = len(os.sched_getaffinity(0))
    print(f"trees: {n_large} and {n_small} JPEGs, 500x375, mean {sum(sizes) / len(sizes) / 1000:.0f} KB, "
          f"{args.classes} class folders; {cpus} CPUs, load {os.getloadavg()[0]:.1f}")  # fmt: skip

    env = bench_env()
    methods = ("plain", "hf", "imtext")
    runs = {(m, t.name): [] for m in methods for t in (big, little)}
    scratch = Path(tempfile.mkdtemp(prefix="ingest-bench-", dir=OUT))
    try:
        # Prefect's first start in a fresh PREFECT_HOME migrates its database: not ingest start-up.
        timed([IMTEXT, "ingest", "--source", str(little)], dict(env, IMTEXT_HOME=str(scratch / "warm")))
        for rep in range(args.repeat):  # interleaved, so a busy spell hits every method alike
            for name in methods:
                for tree in (big, little):
                    runs[name, tree.name].append(run_method(name, tree, scratch, env, rep))
        bulk = best([timed([PY, __file__, "--method", "bulk", str(args.rows), str(scratch / f"bulk{r}")], env)
                     for r in range(args.repeat)])  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"load after: {os.getloadavg()[0]:.1f}; best of {args.repeat} per method and tree")

    def figures(name: str, phase: str = "first", key: str = "work_s") -> dict:
        large = best([r[phase] for r in runs[name, big.name]])
        small = best([r[phase] for r in runs[name, little.name]])
        return {**rate(large, small, n_large, n_small, key), "large": large[key], "small": small[key]}

    head = f"{'method':<36}{'images/s':>10}{'CPU ms/img':>12}{'start-up s':>12}{'large s':>9}{'small s':>9}{'peak MB':>9}"
    print("\n" + head)
    rows = [
        ("plain loop (PIL+sha256, 1 proc)", figures("plain")),
        ('load_dataset("imagefolder")', figures("hf")),
        ("imtext ingest", figures("imtext")),
        ("imtext ingest, CLI wall clock", figures("imtext", key="seconds")),
        ("imtext ingest, re-run unchanged", figures("imtext", "rerun")),
        ("imtext ingest, re-run, CLI wall", figures("imtext", "rerun", key="seconds")),
    ]
    for label, f in rows:
        print(f"{label:<36}{f['rate']:>10,.0f}{f['cpu_ms']:>12.2f}{f['startup']:>12.1f}{f['large']:>9.1f}"
              f"{f['small']:>9.1f}{f['peak']:>9.0f}")  # fmt: skip
    plain, hf, imtext, _, rerun, _ = (f for _, f in rows)
    print("\nimages/s: in-process work, large minus small tree (interpreter, imports and Prefect start-up")
    print("cancelled out); start-up s: the rest of a whole command on the small tree.")
    print(f"imtext / plain loop: {imtext['rate'] / plain['rate']:.2f}x   (goal >= 1.6x on {cpus} cores)")
    print(f"imtext / imagefolder: {imtext['rate'] / hf['rate']:.2f}x   (goal > 1x)")
    print(f"re-run cost per image: {100 * imtext['rate'] / rerun['rate']:.1f}% of a first run   (goal < 10%)")
    print(f"bulk load of {bulk['rows']:,} synthetic rows: {bulk['write_s']:.2f} s ({bulk['write_cpu_s']:.2f} s CPU), "
          f"process peak {bulk['rss_mb']:.0f} MB   (goal < 3 s)")  # fmt: skip


if __name__ == "__main__":
    main()
