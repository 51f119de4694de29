"""Quarantine details describe why an input was rejected without quoting any of its bytes."""

from __future__ import annotations

import pytest

from tasks.ingest import imageio
from tasks.ingest.folders import list_folder
from tasks.ingest.images import locate_source

WNID = "n01440764"
SECRET = b"root:x:0:0:SECRETVALUE:/root:/bin/bash\n"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(SECRET, id="text"),
        pytest.param(b"GIF89a" + SECRET * 3, id="gif-magic"),
        pytest.param(b"P6\n" + SECRET, id="ppm-header-token"),  # Pillow quotes the token it choked on
        pytest.param(b"P6\nSECRETVALUE 2\n255\n", id="ppm-size-token"),
        pytest.param(b"DDS " + SECRET * 4, id="dds-header-size"),  # Pillow prints the bytes as a number
        pytest.param(b"FTEX" + SECRET * 4, id="ftex"),
        pytest.param(b"qoif" + SECRET * 4, id="size-from-the-bytes"),  # a 'bomb' whose size is the bytes
        pytest.param(b"\xff\xd8\xff\xe0" + SECRET * 3, id="jpeg-magic"),
    ],
)
def test_rejection_details_never_quote_the_file(data):
    record = imageio.probe_record(data, "/x/a.JPEG", "a", WNID, "train", None)
    reason, detail = record[11], record[12]
    assert reason is not None and detail
    numbers = {
        str(int.from_bytes(data[i : i + 4], order)) for i in range(0, 16) for order in ("little", "big")
    }
    for piece in ("root", "SECRET", "bin/bash", *numbers):
        assert piece not in detail, (piece, detail)


def test_a_symlinked_system_file_is_quarantined_without_its_content(tmp_path):
    secret = tmp_path / "passwd"
    secret.write_bytes(SECRET * 10)
    folder = tmp_path / "tree" / "train" / WNID
    folder.mkdir(parents=True)
    (folder / f"{WNID}_1.JPEG").symlink_to(secret)
    items, rejects = list_folder(locate_source(str(tmp_path / "tree")))
    records, _ = imageio.probe_files(items)
    rows = [r for r in list(records) + list(rejects) if r[0].endswith(f"{WNID}_1.JPEG")]
    ((*_, reason, detail),) = rows
    assert reason == imageio.NOT_AN_IMAGE
    assert detail == "no known image format" and b"root" not in detail.encode()
