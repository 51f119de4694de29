"""Benchmark: `imtext ingest` against a plain loop and `datasets.load_dataset("imagefolder")`.

Generates ImageNet-sized JPEGs (500x375, about 130 KB) once into bench/out/ingest-cache/: a large
tree (10,000 images in 25 class folders) and a small one (2,000 of the same files, hard-linked).
Each method runs in its own process on both trees and reports the wall and CPU seconds of its work
alone (after imports; for imtext after Prefect's start, by a warm-up flow run); per-image figures
are large minus small, so fixed costs cancel out. The best of --repeat runs counts (the machine
may be shared). The plain loop also runs split over one forked process per CPU: not a method to
beat but the machine's ceiling for the same work. Also: the re-run over the unchanged trees, the CLI's fixed start-up, a bulk load of
1.28 million synthetic `images` rows through the ingest write path, and each one's peak RSS.

    python bench/ingest.py [--large 10000] [--small 2000] [--classes 25] [--rows 1280000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
# Methods, each run in a child process: `python bench/ingest.py --method NAME TARGET HOME`.
# Each reports the wall and CPU seconds (its own and its reaped workers') of its work alone,
# after its imports: start-up is measured separately.


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Work:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, cpu_seconds() - self.cpu


def method_plain(tree: Path, home: Path) -> dict:
    """Single process: PIL open + size + sha256 per file, rows collected, one insert at the end."""
    return _plain_method(tree, home, processes=1)


def _plain_rows(files: list[tuple[str, str, str]]) -> list[tuple]:
    """The plain loop's per-file work (PIL header, read, sha256) over (folder, wnid, name) entries."""
    import hashlib

    from PIL import Image

    rows = []
    for folder, wnid, name in files:
        path = os.path.join(folder, name)
        with Image.open(path) as im:
            width, height, fmt, mode = im.width, im.height, im.format, im.mode
        with open(path, "rb") as fh:
            data = fh.read()
        rows.append((name.rsplit(".", 1)[0], wnid, "train", path, len(data), width, height, fmt, mode,
                     hashlib.sha256(data).hexdigest()))  # fmt: skip
    return rows


def method_plain_split(tree: Path, home: Path) -> dict:
    """The plain loop's work split over one forked process per CPU, rows inserted once by the parent.

    Not a method to beat but the ceiling of this machine: how much faster the same work gets on all
    its cores with nothing else (no listing stat, no quarantine checks, no Prefect).
    """
    return _plain_method(tree, home, processes=len(os.sched_getaffinity(0)))


def _plain_method(tree: Path, home: Path, processes: int) -> dict:
    import multiprocessing

    import pyarrow as pa

    from warehouse.db import Warehouse

    wh = Warehouse(f"sqlite:{home}/catalog.sqlite", f"{home}/data/")
    wh.con  # noqa: B018 - the warehouse is opened (schema applied) before timing, as imtext's is
    with Work() as work:
        files = [
            (str(tree / "train" / wnid), wnid, name)
            for wnid in sorted(os.listdir(tree / "train"))
            for name in sorted(os.listdir(tree / "train" / wnid))
        ]
        if processes == 1:
            rows = _plain_rows(files)
        else:
            with multiprocessing.get_context("fork").Pool(processes) as pool:
                parts = pool.map(_plain_rows, [files[i::processes] for i in range(processes)])
            rows = [row for part in parts for row in part]
        cols = ["image_id", "wnid", "split", "path", "bytes", "width", "height", "format", "mode", "sha256"]
        rows_table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)})

        def insert(con):
            con.register("rows_table", rows_table)
            con.execute(f"INSERT INTO images ({', '.join(cols)}) SELECT * FROM rows_table")

        wh.write(insert)
    return {"rows": len(rows), "work_s": work.wall, "cpu_s": work.cpu}


def method_hf(tree: Path, home: Path) -> dict:
    """`datasets.load_dataset("imagefolder")` into a private cache (it reads bytes, decodes nothing)."""
    os.environ["HF_DATASETS_CACHE"] = str(home / "hf")
    import datasets

    datasets.disable_progress_bars()
    with Work() as work:
        ds = datasets.load_dataset(
            "imagefolder", data_dir=str(tree / "train"), split="train", cache_dir=str(home / "hf")
        )
    return {"rows": ds.num_rows, "work_s": work.wall, "cpu_s": work.cpu}


def method_imtext(source: Path, home: Path) -> dict:
    """The ingest flow in this process as `imtext ingest` runs it: a first run, then a re-run.

    Prefect's API is started by a warm-up flow run on a one-image tree in another home first.
    """
    from flows.commands.common import run_flow
    from flows.demo.sample import generate_sample
    from flows.ingest import ingest_flow

    warm = home / "warm"
    generate_sample(warm / "tree", train_per_class=1, val_per_class=0)
    shutil.rmtree(warm / "tree" / "val")
    os.environ["IMTEXT_HOME"] = str(warm / "home")
    run_flow(ingest_flow, source=str(warm / "tree"))
    os.environ["IMTEXT_HOME"] = str(home / "home")
    with Work() as first:
        summary = run_flow(ingest_flow, source=str(source))
    with Work() as again:
        rerun = run_flow(ingest_flow, source=str(source))
    assert rerun["added"] == 0, rerun
    return {"rows": summary["added"], "work_s": first.wall, "cpu_s": first.cpu,
            "rerun_s": again.wall, "rerun_cpu_s": again.cpu}  # fmt: skip


def method_bulk(rows: int, home: Path) -> dict:
    """1.28M synthetic `images` rows through the ingest write path (timed: the write alone)."""
    import polars as pl

    from tasks.ingest.load import write_batch
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
    with Work() as work:
        counts = write_batch(wh, images, empty, [], "/data/imagenet", "bench")
    return {"rows": counts["added"], "work_s": work.wall, "cpu_s": work.cpu}


def method_imtext_1(source: Path, home: Path) -> dict:
    """The ingest flow with one worker (IMTEXT_WORKERS=1): the same pipeline, probed in-process."""
    os.environ["IMTEXT_WORKERS"] = "1"
    return method_imtext(source, home)


METHODS = {
    "plain": method_plain,
    "plain-split": method_plain_split,
    "hf": method_hf,
    "imtext": method_imtext,
    "imtext-1": method_imtext_1,
}


def child(method: str, target: str, home: str) -> None:
    home_path = Path(home)
    home_path.mkdir(parents=True, exist_ok=True)
    if method == "bulk":
        result = method_bulk(int(target), home_path)
    else:
        result = METHODS[method](Path(target), home_path)
    print("RESULT " + json.dumps(result))


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run a command: its wall seconds, and what its RESULT line (or `imtext ingest`'s summary) says."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-2000:]}\n{err[-4000:]}")
    result = {"seconds": seconds}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result.update(json.loads(line[7:]))
        if line.startswith("ingested "):
            result["flow_s"] = float(line.rsplit(" in ", 1)[1].split("s ", 1)[0])
    return result


def measure(name: str, target: Path | int, scratch: Path, env: dict, tag: str) -> dict:
    """One child process running one method, through a wrapper that adds that child's peak RSS."""
    home = scratch / f"{name}-{tag}"
    return timed([PY, "-c", _WRAPPER, PY, __file__, "--method", name, str(target), str(home)], env)


# Runs a command and prints its RESULT line plus the peak RSS of that command alone.
_WRAPPER = """
import json, resource, subprocess, sys
out = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(out.stderr)
if out.returncode:
    sys.stdout.write(out.stdout); sys.exit(out.returncode)
line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT "))
result = json.loads(line[7:])
result["peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print("RESULT " + json.dumps(result))
"""


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


def per_image(large: dict, small: dict, n_large: int, n_small: int, wall: str, cpu: str) -> dict:
    """Images per second and CPU ms per image, large minus small (fixed costs cancel out)."""
    n = n_large - n_small
    return {"rate": n / (large[wall] - small[wall]), "cpu_ms": 1000 * (large[cpu] - small[cpu]) / n,
            "large": large[wall], "small": small[wall], "peak": max(large["peak_mb"], small["peak_mb"])}  # fmt: skip


def startup(env: dict, tree: Path, scratch: Path) -> dict:
    """Fixed start-up of the CLI: `imtext ingest` on a one-class tree minus its flow's own work,
    and `imtext sql` (which never starts Prefect)."""
    from flows.demo.sample import generate_sample

    tiny = scratch / "tiny"
    generate_sample(tiny, train_per_class=1, val_per_class=0)
    shutil.rmtree(tiny / "val")
    home = dict(env, IMTEXT_HOME=str(scratch / "cli-home"))
    runs = [timed([IMTEXT, "ingest", "--source", str(tiny)], home) for _ in range(2)]
    sql = [timed([IMTEXT, "sql", "SELECT count(*) FROM images"], home) for _ in range(3)]
    first = min(runs, key=lambda r: r["seconds"])
    return {"ingest_s": first["seconds"], "flow_s": first["flow_s"], "sql_s": min(r["seconds"] for r in sql)}


def tree_parser(doc: str) -> argparse.ArgumentParser:
    """The options of the ingest benchmarks: images in the large and the small tree, and their classes."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--classes", type=int, default=25)
    return parser


def main() -> None:
    parser = tree_parser(__doc__)
    parser.add_argument("--rows", type=int, default=1_280_000)
    parser.add_argument(
        "--repeat", type=int, default=3, help="measurements per method and tree; the best counts"
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
    runs: dict = {(m, t.name): [] for m in METHODS for t in (big, little)}
    scratch = Path(tempfile.mkdtemp(prefix="ingest-bench-", dir=OUT))
    try:
        start = startup(env, big, scratch)
        for rep in range(args.repeat):  # interleaved, so a busy spell hits every method alike
            for name in METHODS:
                for tree in (big, little):
                    runs[name, tree.name].append(measure(name, tree, scratch, env, f"{tree.name}-{rep}"))
        bulk = best([measure("bulk", args.rows, scratch, env, f"bulk-{r}") for r in range(args.repeat)])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"load after: {os.getloadavg()[0]:.1f}; best of {args.repeat} per method and tree\n")

    def figures(name: str, wall: str = "work_s", cpu: str = "cpu_s") -> dict:
        large, small = best(runs[name, big.name]), best(runs[name, little.name])
        return per_image(large, small, n_large, n_small, wall, cpu)

    rows = [
        ("plain loop (PIL+sha256, 1 process)", figures("plain")),
        (f"plain loop split over {cpus} processes", figures("plain-split")),
        ('datasets.load_dataset("imagefolder")', figures("hf")),
        ("imtext ingest (flow)", figures("imtext")),
        ("imtext ingest, 1 worker", figures("imtext-1")),
        ("imtext ingest, re-run unchanged", figures("imtext", "rerun_s", "rerun_cpu_s")),
    ]
    print(f"{'method':<40}{'images/s':>10}{'CPU ms/img':>12}{'large s':>9}{'small s':>9}{'peak MB':>9}")
    for label, f in rows:
        print(
            f"{label:<40}{f['rate']:>10,.0f}{f['cpu_ms']:>12.3f}{f['large']:>9.2f}{f['small']:>9.2f}{f['peak']:>9.0f}"
        )
    plain, split, hf, imtext, single, rerun = (f for _, f in rows)
    print(
        "\nimages/s and CPU ms/img: the work alone (after imports and Prefect's start), large minus small tree;"
    )
    print("CPU counts the process and its workers, so it is what the machine spent whatever else ran on it.")
    print(f"imtext / plain loop: {imtext['rate'] / plain['rate']:.2f}x images/s, "
          f"{plain['cpu_ms'] / imtext['cpu_ms']:.2f}x less CPU per image   (goal >= 1.6x on {cpus} cores)")  # fmt: skip
    print(
        f"imtext, {cpus} workers / 1 worker: {imtext['rate'] / single['rate']:.2f}x images/s (same pipeline, same run)"
    )
    print(
        f"ceiling: the plain loop's work on {cpus} processes / 1 process: {split['rate'] / plain['rate']:.2f}x "
        f"images/s; imtext reaches {imtext['rate'] / split['rate']:.2f}x of that ceiling"
    )
    print(f"imtext / imagefolder: {imtext['rate'] / hf['rate']:.2f}x images/s   (goal > 1x)")
    print(f"re-run cost per image: {100 * imtext['rate'] / rerun['rate']:.1f}% of a first run "
          f"({100 * rerun['cpu_ms'] / imtext['cpu_ms']:.1f}% of its CPU)   (goal < 10%)")  # fmt: skip
    print(f"fixed start-up: `imtext ingest` on a one-class tree {start['ingest_s']:.1f} s, of which the flow "
          f"{start['flow_s']:.1f} s; `imtext sql` {start['sql_s']:.1f} s   (goal: a few s; sql < 2 s)")  # fmt: skip
    print(f"bulk load of {bulk['rows']:,} synthetic rows: {bulk['work_s']:.2f} s ({bulk['cpu_s']:.2f} s CPU), "
          f"process peak {bulk['peak_mb']:.0f} MB   (goal < 3 s)")  # fmt: skip


if __name__ == "__main__":
    main()
