"""Every configured path is absolute once settings load, whatever the working directory was."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("IMTEXT_HOME", "IMTEXT_WAREHOUSE", "IMTEXT_WAREHOUSE_DATA"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_default_home_is_absolute_under_the_working_directory(clean_env, tmp_path):
    from flows.settings import load_settings

    clean_env.chdir(tmp_path)
    settings = load_settings()
    assert settings.home == tmp_path.resolve() / "imtext-home"
    assert settings.home.is_absolute()
    assert settings.models_dir.is_absolute() and settings.reports_dir.is_absolute()
    assert settings.catalog == f"sqlite:{tmp_path.resolve()}/imtext-home/warehouse/catalog.sqlite"
    assert settings.data_path == f"{tmp_path.resolve()}/imtext-home/warehouse/data/"


def test_relative_settings_are_resolved_when_they_load(clean_env, tmp_path):
    from flows.settings import load_settings

    clean_env.chdir(tmp_path)
    clean_env.setenv("IMTEXT_HOME", "rel/home/../home")
    clean_env.setenv("IMTEXT_WAREHOUSE", "sqlite:cat/catalog.sqlite")
    clean_env.setenv("IMTEXT_WAREHOUSE_DATA", "lake")
    settings = load_settings()
    # Moving elsewhere afterwards changes nothing: the paths were fixed at load.
    clean_env.chdir("/")
    assert settings.home == tmp_path.resolve() / "rel" / "home"
    assert settings.catalog == f"sqlite:{tmp_path.resolve()}/cat/catalog.sqlite"
    assert settings.data_path == f"{tmp_path.resolve()}/lake/"


def test_home_override_and_user_folder_are_expanded(clean_env, tmp_path):
    from flows.settings import load_settings

    clean_env.setenv("HOME", str(tmp_path))
    assert load_settings(home="~/h").home == tmp_path.resolve() / "h"
    assert load_settings(home=Path("x")).home == Path.cwd().resolve() / "x"


def test_urls_and_postgres_catalogs_are_left_alone(clean_env):
    from flows.settings import load_settings

    clean_env.setenv("IMTEXT_WAREHOUSE", "postgres:dbname=imtext host=db")
    clean_env.setenv("IMTEXT_WAREHOUSE_DATA", "s3://bucket/lake/")
    settings = load_settings()
    assert settings.catalog == "postgres:dbname=imtext host=db"
    assert settings.data_path == "s3://bucket/lake/"
