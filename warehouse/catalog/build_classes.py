"""Build warehouse/catalog/imagenet_classes.tsv from the info files inside the timm wheel.

Usage: python warehouse/catalog/build_classes.py [PATH_TO_TIMM_WHEEL]

Without an argument the wheel is fetched with `pip download timm --no-deps`. The wheel is read
with zipfile; timm itself is never imported.
"""

from __future__ import annotations

import glob
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

INFO = "timm/data/_info/"
OUT = Path(__file__).with_name("imagenet_classes.tsv")

HEADER = """\
# The 1000 ImageNet-1k (ILSVRC2012) classes in the standard index order.
# Columns: class_index, wnid, name (first lemma), lemmas (comma-separated), gloss (WordNet definition).
# Source: the info files imagenet_synsets.txt, imagenet_synset_to_lemma.txt and
# imagenet_synset_to_definition.txt shipped inside the timm wheel ({wheel}),
# https://github.com/huggingface/pytorch-image-models, Apache License 2.0; the names and glosses
# come from WordNet 3.0 (Princeton University, WordNet 3.0 licence).
# Regenerate with: python warehouse/catalog/build_classes.py
"""


def _clean(value: str) -> str:
    return " ".join(value.replace("\t", " ").split())


def read_wheel(wheel: Path) -> list[tuple[int, str, str, str, str]]:
    with zipfile.ZipFile(wheel) as zf:
        synsets = zf.read(INFO + "imagenet_synsets.txt").decode().split()
        lemmas = dict(
            line.split("\t", 1)
            for line in zf.read(INFO + "imagenet_synset_to_lemma.txt").decode().splitlines()
            if "\t" in line
        )
        glosses = dict(
            line.split("\t", 1)
            for line in zf.read(INFO + "imagenet_synset_to_definition.txt").decode().splitlines()
            if "\t" in line
        )
    if len(synsets) != 1000:
        raise SystemExit(f"expected 1000 synsets in {wheel}, found {len(synsets)}")
    rows = []
    for index, wnid in enumerate(synsets):
        names = [_clean(n) for n in lemmas[wnid].split(",") if n.strip()]
        rows.append((index, wnid, names[0], ", ".join(names), _clean(glosses[wnid])))
    return rows


def main() -> None:
    if len(sys.argv) > 1:
        wheel = Path(sys.argv[1])
    else:
        tmp = tempfile.mkdtemp()
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "timm", "--no-deps", "-q", "-d", tmp],
            check=True,
        )
        wheel = Path(glob.glob(f"{tmp}/timm-*.whl")[0])
    rows = read_wheel(wheel)
    with OUT.open("w", encoding="utf-8") as fh:
        fh.write(HEADER.format(wheel=wheel.name))
        fh.write("class_index\twnid\tname\tlemmas\tgloss\n")
        for row in rows:
            fh.write("\t".join(str(v) for v in row) + "\n")
    print(f"wrote {len(rows)} classes to {OUT}")


if __name__ == "__main__":
    main()
