"""Runtime settings, read from the environment (prefix ``PATRON_``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET_KEY = "patron-development-key"
"""Public, so only for a server nobody else reaches: the web interface refuses logins with
it unless the public URL is local."""


class Settings(BaseSettings):
    """Everything an operator can set without touching code."""

    model_config = SettingsConfigDict(env_prefix="PATRON_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///patron.db",
        description="SQLAlchemy URL of the operational store; a SQLite file by default.",
    )
    segment_replica: str = Field(
        default="patron-replica.duckdb",
        description="DuckDB file of the segment replica, the columnar copy that live counts "
        "read; made by `patron segment refresh`, kept current by imports and analyses once "
        "it exists. Empty: live counts always read the store.",
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
    frequency_cap_all_channels: int | None = Field(
        default=5,
        ge=1,
        description="At most this many marketing messages per customer across every "
        "channel within frequency_cap_days; empty for no cross-channel cap.",
    )
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Where recipients reach this server: tracking and unsubscribe links.",
    )
    secret_key: str = Field(
        default=DEFAULT_SECRET_KEY,
        min_length=16,
        description="Signs tracking and unsubscribe links; set your own in production.",
    )
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_connections: int = Field(default=8, ge=1, le=64)
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    worker_batch: int = Field(default=200, ge=1, le=10_000)
    scheduler_poll_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often the scheduler looks for campaigns whose run time has come.",
    )
    journey_poll_seconds: float = Field(
        default=0.2,
        gt=0,
        description="How often the trigger runner reads new events and runs due journey steps.",
    )
    worker_lease_seconds: int = Field(
        default=120,
        ge=1,
        description="How long a claimed message stays with its worker; the worker renews "
        "it as the batch goes (when delivery starts and at each handover, once half of it "
        "has passed), so it runs out only when a worker dies or hangs, and then another "
        "claim takes the message over.",
    )
    retry_base_seconds: int = Field(default=60, ge=1)
    max_attempts: int = Field(default=5, ge=1, le=50)
    quiet_hours_start: int = Field(
        default=21,
        ge=0,
        le=23,
        description="From this hour of the customer's own day, messages on the quiet-hours "
        "channels wait until quiet_hours_end.",
    )
    quiet_hours_end: int = Field(default=9, ge=0, le=23)
    # channel names as strings: the settings load before the models that name channels
    quiet_hours_channels: list[Literal["email", "sms", "phone", "telegram", "whatsapp", "push"]] = (
        Field(
            default=["sms", "whatsapp", "telegram", "push"],
            description="Channels that buzz a phone; email waits in the inbox and goes any "
            "time, and a call list is worked in the operators' own hours.",
        )
    )
    default_timezone: str = Field(
        default="Europe/Moscow",
        description="The time zone of a customer whose profile names none.",
    )
    complaint_rate_limit: float = Field(
        default=0.003,
        ge=0,
        le=1,
        description="A running campaign whose complaints exceed this share of its sent "
        "messages is paused at once (checked from complaint_min_sent messages on).",
    )
    complaint_min_sent: int = Field(default=200, ge=1)
    channels_file: str = Field(
        default="channels.yaml",
        description="YAML naming the providers of SMS, Telegram, WhatsApp and web push, with "
        "their webhook secrets; without it only email is on.",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once."""
    return Settings()
