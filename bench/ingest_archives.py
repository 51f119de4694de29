"""Benchmark: `imtext ingest` from an ILSVRC-style tar and from parquet shards vs the same images as a folder.

Uses the trees of bench/ingest.py (generated once into bench/out/ingest-cache/) and writes, once,
the same images as ILSVRC2012_img_train.tar (one <wnid>.tar per class) and as Hugging Face style
parquet shards. Each source is ingested by the ingest flow into a fresh warehouse, large and small,
in the same run; per-image figures are large minus small (fixed costs cancel out), wall and CPU.
Goal: the tar at least as fast as the folder (one sequential read instead of one open per file).

    python bench/ingest_archives.py [--large 10000] [--small 2000] [--classes 25]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ingest as base  # noqa: E402 - bench/ingest.py: trees, timing, environment

from flows.demo.sample import write_parquet_shards  # noqa: E402


def make_train_tar(tree: Path) -> Path:
    """tree/train/<wnid>/*.JPEG as ILSVRC2012_img_train.tar beside the tree (once)."""
    import io
    import tarfile

    out = tree.parent / f"{tree.name}-tar" / "ILSVRC2012_img_train.tar"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as outer:
        for folder in sorted((tree / "train").iterdir()):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as inner:
                for f in sorted(folder.iterdir()):
                    inner.add(f, arcname=f.name)
            info = tarfile.TarInfo(f"{folder.name}.tar")
            info.size = buf.tell()
            buf.seek(0)
            outer.addfile(info, buf)
    partial.rename(out)
    return out


def make_shards(tree: Path, shards: int) -> Path:
    """tree's class folders as parquet shards (train-0000k-of-...), once."""
    out = tree.parent / f"{tree.name}-parquet"
    if (out / "done").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    write_parquet_shards(tree, out, shards=shards, rows_per_group=256)
    (out / "done").touch()
    return out


def main() -> None:
    parser = base.tree_parser(__doc__)
    parser.add_argument(
        "--repeat", type=int, default=3, help="measurements per source and size; the best counts"
    )
    args = parser.parse_args()

    big, little = base.make_trees(args.large, args.small, args.classes)
    n_large, n_small = base.count_images(big), base.count_images(little)
    sources = {
        "folder": (big, little),
        "tar": (make_train_tar(big), make_train_tar(little)),
        "parquet": (make_shards(big, 8), make_shards(little, 2)),
    }
    for large, small in sources.values():  # warm the page cache
        for root in (large, small):
            for dirpath, _, files in os.walk(root) if root.is_dir() else [(root.parent, [], [root.name])]:
                for f in files:
                    with open(os.path.join(dirpath, f), "rb") as fh:
                        while fh.read(1 << 24):
                            pass
    print(f"{n_large} and {n_small} JPEGs (500x375) in {args.classes} classes, as a folder, an ILSVRC "
          f"train tar and parquet shards; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")  # fmt: skip

    env = base.bench_env()
    scratch = Path(tempfile.mkdtemp(prefix="ingest-archives-", dir=base.OUT))
    runs = {(name, size): [] for name in sources for size in ("large", "small")}
    try:
        for rep in range(args.repeat):  # interleaved, so a busy spell hits every source alike
            for name, (large, small) in sources.items():
                for size, src in (("large", large), ("small", small)):
                    runs[name, size].append(base.measure("imtext", src, scratch, env, f"{name}-{size}-{rep}"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"load after: {os.getloadavg()[0]:.1f}; best of {args.repeat} per source and size\n")

    print(f"{'source':<10}{'images/s':>10}{'CPU ms/img':>12}{'large s':>9}{'small s':>9}{'peak MB':>9}")
    figures = {}
    for name in sources:
        large, small = base.best(runs[name, "large"]), base.best(runs[name, "small"])
        f = figures[name] = base.per_image(large, small, n_large, n_small, "work_s", "cpu_s")
        print(
            f"{name:<10}{f['rate']:>10,.0f}{f['cpu_ms']:>12.3f}{f['large']:>9.2f}{f['small']:>9.2f}{f['peak']:>9.0f}"
        )
    print("\nthe ingest flow's work alone (Prefect started by a warm-up run), large minus small; CPU counts")
    print("the process and its workers.")
    for name in ("tar", "parquet"):
        f, folder = figures[name], figures["folder"]
        print(f"{name} / folder: {f['rate'] / folder['rate']:.2f}x images/s, "
              f"{folder['cpu_ms'] / f['cpu_ms']:.2f}x less CPU per image" + ("   (goal >= 1x)" if name == "tar" else ""))  # fmt: skip


if __name__ == "__main__":
    main()
