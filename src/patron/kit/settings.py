"""Runtime settings, read from the environment (prefix ``PATRON_``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything an operator can set without touching code."""

    model_config = SettingsConfigDict(env_prefix="PATRON_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///patron.db",
        description="SQLAlchemy URL of the operational store; a SQLite file by default.",
    )
    default_region: str = Field(
        default="RU",
        description="ISO country code used to read phone numbers written without a country code.",
    )
    default_currency: str = Field(default="RUB", min_length=3, max_length=3)
    import_chunk_rows: int = Field(default=50_000, ge=1)
    frequency_cap_messages: int = Field(
        default=3,
        ge=1,
        description="At most this many marketing messages per customer and channel, across "
        "all campaigns, within frequency_cap_days.",
    )
    frequency_cap_days: int = Field(default=7, ge=1)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once."""
    return Settings()
