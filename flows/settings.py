"""Platform settings, read from IMTEXT_* environment variables when a flow or command starts."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A data path with a scheme (s3://, gs://, az://, https://, file://) is a URL, left as it is.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def absolute(path: str | Path) -> Path:
    """`path` with `~` expanded, made absolute against the current directory and normalised."""
    return Path(path).expanduser().resolve()


class Settings(BaseSettings):
    """Where things live and which services to talk to. Built per run, never at import."""

    model_config = SettingsConfigDict(env_prefix="IMTEXT_", extra="ignore")

    home: Path = Field(Path("./imtext-home"), description="warehouse, models and reports")
    warehouse: str | None = Field(
        None,
        description="DuckLake catalog after 'ducklake:'; default sqlite:$IMTEXT_HOME/warehouse/catalog.sqlite",
    )
    warehouse_data: str | None = Field(
        None, description="where DuckLake writes Parquet data files; default $IMTEXT_HOME/warehouse/data/"
    )
    wikipedia_api: str = "https://en.wikipedia.org/api/rest_v1"
    flickr_api: str = "https://api.flickr.com/services/rest"
    flickr_api_key: SecretStr | None = None
    workers: int = Field(0, description="parallel worker processes; 0 means one per CPU core")
    task_runner: str = Field("default", description="where a flow's fan-out runs: default or dask")
    dask_address: str | None = Field(
        None, description="scheduler of an existing Dask cluster, e.g. tcp://10.0.0.5:8786"
    )

    # Every path is made absolute when settings load: a relative path would otherwise mean a
    # different place to each library that resolves it later (Great Expectations refuses one), and
    # to a deployment run started in another working directory.
    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return absolute(value)

    @field_validator("warehouse", mode="after")
    @classmethod
    def _absolute_catalog(cls, value: str | None) -> str | None:
        if value and value.startswith("sqlite:"):
            return "sqlite:" + str(absolute(value.removeprefix("sqlite:")))
        return value

    @field_validator("warehouse_data", mode="after")
    @classmethod
    def _absolute_data(cls, value: str | None) -> str | None:
        if not value or _URL.match(value):
            return value
        return str(absolute(value)) + "/"

    @property
    def catalog(self) -> str:
        return self.warehouse or f"sqlite:{self.home / 'warehouse' / 'catalog.sqlite'}"

    @property
    def data_path(self) -> str:
        if self.warehouse_data:
            return self.warehouse_data
        return str(self.home / "warehouse" / "data") + "/"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"


def load_settings(**overrides) -> Settings:
    """Settings from the environment, with explicit non-None overrides on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
