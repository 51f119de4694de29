"""Fixtures shared by every test: a private IMTEXT_HOME and a warehouse in it."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh IMTEXT_HOME with the default SQLite catalog; environment restored afterwards."""
    path = tmp_path / "home"
    monkeypatch.setenv("IMTEXT_HOME", str(path))
    monkeypatch.delenv("IMTEXT_WAREHOUSE", raising=False)
    monkeypatch.delenv("IMTEXT_WAREHOUSE_DATA", raising=False)
    return path


@pytest.fixture
def settings(home):
    from flows.settings import load_settings

    return load_settings()


@pytest.fixture
def wh(settings):
    from warehouse.db import Warehouse

    handle = Warehouse.from_settings(settings)
    yield handle
    handle.close()


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
