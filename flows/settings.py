"""Platform settings, read from IMTEXT_* environment variables when a flow or command starts."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    @property
    def catalog(self) -> str:
        return self.warehouse or f"sqlite:{(self.home / 'warehouse' / 'catalog.sqlite').resolve()}"

    @property
    def data_path(self) -> str:
        if self.warehouse_data:
            return self.warehouse_data
        return str((self.home / "warehouse" / "data").resolve()) + "/"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"


def load_settings(**overrides) -> Settings:
    """Settings from the environment, with explicit non-None overrides on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
