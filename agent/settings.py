"""All of loracle's settings in one typed object, read once from the environment (prefix LORACLE_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".local" / "share" / "loracle"


class Settings(BaseSettings):
    """Settings shared by the CLI, the API and the agent; lower layers get plain values passed down."""

    model_config = SettingsConfigDict(env_prefix="LORACLE_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="Data directory (database, adapters, images).")
    database_url: str | None = Field(
        default=None, description="An external PostgreSQL with pgvector; unset starts the embedded server."
    )
    embedding_model: str = Field(
        default="all-MiniLM-L6-v2", description="'all-MiniLM-L6-v2' (packaged, offline) or 'openai:MODEL'."
    )
    adapter_dirs: list[Path] = Field(
        default_factory=list, description="Extra folders adapter files may be read from (besides HOME/adapters)."
    )
    retrieval_top_k: int = Field(default=150, ge=1, le=1000)
    hnsw_ef_search: int = Field(default=200, ge=10, le=1000)
    exclude_tags: list[str] = Field(
        default_factory=lambda: ["character", "celebrity"],
        description="Adapters with any of these tags are left out of retrieval by default (Stylus's filter).",
    )

    @property
    def adapters_dir(self) -> Path:
        return self.home / "adapters"

    @property
    def pgdata_dir(self) -> Path:
        return self.home / "pgdata"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
