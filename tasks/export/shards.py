"""Shard files of an export: WebDataset tars and Parquet files, each bounded by a sample count and a
size, and hashed as they are written so that no shard is read back for the manifest."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.export.samples import sample_size

# Row groups of at most 100 images (and 100 MB, the limit `datasets` itself writes with), so a reader
# that wants one image reads a few MB, not a whole file.
ROW_GROUP_ROWS = 100
ROW_GROUP_BYTES = 100 * 2**20
TAR_BLOCK = 512
TAR_RECORD = 20 * TAR_BLOCK


class _Shards:
    """Samples into numbered shard files, a new one when the next sample would pass the count or size bound."""

    def __init__(self, open_shard: Callable[[int], _Shard], max_count: int, max_bytes: int):
        self.open_shard, self.max_count, self.max_bytes = open_shard, max_count, max_bytes
        self.current: _Shard | None = None
        self.closed: list[_Shard] = []

    def add(self, sample: dict) -> None:
        if self.current is not None and not self.current.fits(sample, self.max_count, self.max_bytes):
            self._close()
        if self.current is None:
            self.current = self.open_shard(len(self.closed))
        self.current.add(sample)

    def _close(self) -> None:
        self.current.close()
        self.closed.append(self.current)
        self.current = None

    def close(self) -> list[_Shard]:
        if self.current is not None:
            self._close()
        return self.closed


class _HashedFile:
    """A file opened for writing that hashes what goes through it, so no shard is read back."""

    def __init__(self, path: Path):
        self.fh = open(path, "wb")  # closed by the shard that owns it
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += memoryview(data).nbytes
        return self.fh.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()

    @property
    def closed(self) -> bool:
        return self.fh.closed


class _Shard:
    path: Path
    file: _HashedFile
    count: int = 0
    texts: int = 0

    def fits(self, sample: dict, max_count: int, max_bytes: int) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def add(self, sample: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def _tar_member_bytes(size: int) -> int:
    return TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK


_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def wds_members(sample: dict) -> list[tuple[str, bytes]]:
    """The tar members of one WebDataset sample: `<key>.jpg`, `.cls`, `.txt` and `.json`."""
    key = _KEY_UNSAFE.sub("_", sample["image_id"])  # a dot would end the key for webdataset readers
    meta = {k: v for k, v in sample.items() if k != "image"}
    return [
        (f"{key}.jpg", sample["image"]["bytes"]),
        (f"{key}.cls", str(sample["label"]).encode()),
        (f"{key}.txt", sample["caption"].encode()),
        (f"{key}.json", json.dumps(meta, ensure_ascii=False).encode()),
    ]


class _TarShard(_Shard):
    """One WebDataset tar; its size is known exactly as it grows (ustar headers, 10 KiB records)."""

    def __init__(self, path: Path):
        self.path, self.count, self.texts, self.raw = path, 0, 0, 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = _HashedFile(path)
        self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.USTAR_FORMAT)
        self._pending: list[tuple[str, bytes]] | None = None

    @staticmethod
    def _final(raw: int) -> int:
        return -(-(raw + 2 * TAR_BLOCK) // TAR_RECORD) * TAR_RECORD

    def fits(self, sample, max_count, max_bytes) -> bool:
        self._pending = wds_members(sample)
        grown = self.raw + sum(_tar_member_bytes(len(p)) for _, p in self._pending)
        return self.count < max_count and self._final(grown) <= max_bytes

    def add(self, sample) -> None:
        members = self._pending if self._pending is not None else wds_members(sample)
        self._pending = None
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(payload), 0, 0o644  # reproducible shards
            self.tar.addfile(info, io.BytesIO(payload))
            self.raw += _tar_member_bytes(len(payload))
        self.count += 1
        self.texts += len(sample["texts"])

    def close(self) -> None:
        self.tar.close()
        self.file.close()


IMAGE_COLUMN = "image.bytes"


@functools.cache
def _parquet_column_options(schema: pa.Schema) -> tuple[dict[str, str], list[str]]:
    """zstd and dictionaries for every column but the image bytes: JPEG does not compress, and
    leaving it alone writes about twice as fast."""
    sink = io.BytesIO()
    pq.write_table(schema.empty_table(), sink)
    leaves = pq.ParquetFile(io.BytesIO(sink.getvalue())).schema
    paths = [leaves.column(i).path for i in range(len(leaves))]
    compression = {p: ("NONE" if p == IMAGE_COLUMN else "ZSTD") for p in paths}
    return compression, [p for p in paths if p != IMAGE_COLUMN]


class _ParquetShard(_Shard):
    """One Parquet file written in row groups of at most ROW_GROUP_ROWS images / ROW_GROUP_BYTES."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.schema, self.count, self.texts, self.bytes = path, schema, 0, 0, 0
        path.parent.mkdir(parents=True, exist_ok=True)
        compression, dictionary = _parquet_column_options(schema)
        self.file = _HashedFile(path)
        self.writer = pq.ParquetWriter(self.file, schema, compression=compression, use_dictionary=dictionary)
        self.group: list[dict] = []
        self.group_bytes = 0

    def fits(self, sample, max_count, max_bytes) -> bool:
        return self.count < max_count and self.bytes + sample_size(sample) <= max_bytes

    def add(self, sample) -> None:
        size = sample_size(sample)
        if self.group and (len(self.group) >= ROW_GROUP_ROWS or self.group_bytes + size > ROW_GROUP_BYTES):
            self._flush()
        self.group.append(sample)
        self.group_bytes += size
        self.bytes += size
        self.count += 1
        self.texts += len(sample["texts"])

    def _flush(self) -> None:
        self.writer.write_table(pa.Table.from_pylist(self.group, schema=self.schema))
        self.group, self.group_bytes = [], 0

    def close(self) -> None:
        if self.group or self.count == 0:
            self._flush()
        self.writer.close()
        self.file.close()
