"""What both kinds of ingestion share: the layout of a located source, the plan of a run, and val labels.

Folder sources (`tasks.ingest.folders`) and archive sources (`tasks.ingest.archives`) are both
located into a `Source`, walked into a `Listing` and planned into a `Plan`; val labels come from
LOC_val_solution.csv or the devkit's ground truth, whichever the source has beside it.
"""

from __future__ import annotations

import csv
import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import polars as pl

from tasks.common.errors import InputError

SPLITS = ("train", "val", "auto")
LABEL_FILE = "LOC_val_solution.csv"
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
KAGGLE_BASE = Path("ILSVRC", "Data", "CLS-LOC")


# The holders below are passed between the ingest tasks. Prefect walks a task's parameters (lists,
# tuples, dicts, dataclasses) item by item, about 10 µs an item: minutes for a million listed
# inputs. The flow hands them over wrapped in `prefect.utilities.annotations.opaque()`, which
# Prefect resolves without walking into.


@dataclass(slots=True)
class SplitFolder:
    """One split's folder: class folders (labels from their names) or flat val images with labels.

    classes: (wnid, folder) pairs; labels: image_id -> wnid of flat val images; labels_file: their file.
    """

    split: str
    path: Path
    classes: tuple | list = ()
    labels: dict | None = None
    labels_file: Path | None = None


@dataclass(slots=True)
class Source:
    """A located, validated source: kind "folder" (folders), "tar" or "parquet" (files, labels)."""

    kind: str
    root: Path
    split: str
    folders: tuple = ()
    files: tuple = ()
    labels: dict | None = None


@dataclass(slots=True, repr=False)
class Listing:
    """What walking a source found: folder items and rejects, or scanned archives."""

    items: list = field(default_factory=list)
    rejects: list = field(default_factory=list)
    archives: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.items, self.rejects, self.archives = list(self.items), list(self.rejects), list(self.archives)

    def __repr__(self) -> str:
        return f"Listing({len(self.items)} items, {len(self.rejects)} rejects, {len(self.archives)} archives)"


@dataclass(slots=True, repr=False)
class Plan:
    """What a run has to do: shards to probe, rejects already known, and what it skips.

    units: (fn, args, weight) shards for the pool; rejects: records found while listing; known:
    what the warehouse held under the source; seen/skipped: inputs found / unchanged;
    skipped_archives: archives unchanged since their ingest; archives: `ingested_archives` rows.
    """

    source: str
    kind: str
    units: list = field(default_factory=list)
    rejects: list = field(default_factory=list)
    known: pl.DataFrame | None = None
    seen: int = 0
    skipped: int = 0
    skipped_archives: int = 0
    archives: list = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Plan({self.kind} {self.source!r}: {len(self.units)} shards, {self.seen} seen, {self.skipped} skipped)"

    @property
    def total(self) -> int:
        return sum(weight for _, _, weight in self.units)


# --------------------------------------------------------------------------------------------------
# Val labels


def wnids() -> tuple[str, ...]:
    """The 1000 wnids in the standard class order (a parquet shard's `label` indexes them)."""
    from warehouse.catalog import read_classes

    return tuple(read_classes()["wnid"].to_list())


def read_val_labels(path: Path) -> dict[str, str]:
    """image_id -> wnid from LOC_val_solution.csv, or from the devkit's ground truth (txt or tar.gz)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such val labels file")
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")) or name.endswith(".txt"):
        return read_devkit_labels(path)
    return _read_solution_csv(path)


def _read_solution_csv(path: Path) -> dict[str, str]:
    from warehouse.catalog import wnid_set

    wnids = wnid_set()
    labels: dict[str, str] = {}
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
                raise InputError(
                    f"{path}: malformed val labels: the header must be 'ImageId,PredictionString', got {header!r}"
                )
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                tokens = row[1].split() if len(row) >= 2 else []
                if not row[0].strip() or not tokens:
                    raise InputError(f"{path}:{line}: malformed val labels row {row!r}")
                if tokens[0] not in wnids:
                    raise InputError(f"{path}:{line}: {tokens[0]!r} is not an ImageNet-1k wnid")
                labels[row[0].strip()] = tokens[0]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: malformed val labels: {exc}") from None
    if not labels:
        raise InputError(f"{path}: the val labels file holds no rows")
    return labels


def _parse_ground_truth(text: str, meta: bytes, where: str) -> dict[str, str]:
    """Devkit ground truth (one ILSVRC2012_ID per line, in val image order) → image_id → wnid."""
    import scipy.io

    try:
        synsets = scipy.io.loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
        ids = {int(i): str(w) for i, w in zip(synsets["ILSVRC2012_ID"], synsets["WNID"], strict=True)}
    except Exception as exc:  # scipy raises many kinds on a foreign file
        raise InputError(f"{where}: meta.mat has no readable synsets ({exc})") from None
    known = set(wnids())
    labels = {}
    for n, line in enumerate(text.split(), start=1):
        wnid = ids.get(int(line)) if line.isdigit() else None
        if wnid not in known:
            raise InputError(f"{where}:{n}: {line!r} is not the ILSVRC2012_ID of an ImageNet-1k class")
        labels[f"ILSVRC2012_val_{n:08d}"] = wnid
    if not labels:
        raise InputError(f"{where}: the ground truth file is empty")
    return labels


def read_devkit_labels(path: Path) -> dict[str, str]:
    """Val labels from the devkit: its .tar.gz, or the ground-truth .txt with meta.mat beside it."""
    if path.name.endswith(".txt"):
        meta = path.with_name("meta.mat")
        if not meta.is_file():
            raise InputError(f"{path}: the devkit ground truth needs meta.mat beside it ({meta})")
        return _parse_ground_truth(path.read_text(), meta.read_bytes(), str(path))
    try:
        with tarfile.open(path, "r:*") as tf:
            found = {}
            for info in tf:
                name = PurePosixPath(info.name).name
                if info.isfile() and name in (GROUND_TRUTH, "meta.mat"):
                    found[name] = tf.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read the devkit archive ({exc})") from None
    if len(found) < 2:
        raise InputError(f"{path}: no data/{GROUND_TRUTH} and data/meta.mat in this devkit archive")
    return _parse_ground_truth(found[GROUND_TRUTH].decode(), found["meta.mat"], f"{path}::{GROUND_TRUTH}")
