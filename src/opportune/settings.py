"""The one typed settings object: read from the environment (OPPORTUNE_*) and the CLI.

No other module reads the environment; everything receives a ``Settings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Defaults that components taking no Settings (the writer, the Redis store) share with it.
DEFAULT_COMMIT_MAX_BATCH: Final = 2000
DEFAULT_REDIS_PREFIX: Final = "opp:"


class Settings(BaseSettings):
    """Process settings. Workspace documents (sites, segments...) live in YAML, not here."""

    model_config = SettingsConfigDict(env_prefix="OPPORTUNE_", extra="forbid", frozen=True)

    data_dir: Path = Field(
        default=Path("data"),
        validate_default=True,
        description="Folder for the SQLite file, models; relative: to the starting folder",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means SQLite at DATA_DIR/opportune.db",
    )
    redis_url: str = Field(
        default="", description="Redis for live state shared by several processes; empty: memory"
    )
    redis_prefix: str = Field(
        default=DEFAULT_REDIS_PREFIX, description="Namespace of this deployment's keys"
    )
    workspace: Path | None = Field(default=None, description="Folder of workspace YAML documents")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    api_key: str = Field(
        default="",
        description="Admin-scope key for the admin API (X-API-Key header), beside the keys "
        "of `opportune keys create`",
    )
    rate_limit_events_per_ip: float = Field(
        # Generous: a carrier's or an office's NAT puts many visitors (≈ a batch every few
        # seconds each) behind one address; one abusive client sends far more.
        default=1000.0,
        ge=0,
        description="Requests a second one client IP may make to /v1/events, /v1/actions and "
        "/v1/recheck (the peer, or X-Forwarded-For with trusted_proxy_headers); 0: no limit",
    )
    rate_limit_events_per_site: float = Field(
        default=10_000.0,
        ge=0,
        description="Requests a second one site (all its keys) may make to those; 0: no limit",
    )
    rate_limit_admin_per_key: float = Field(
        default=100.0, ge=0, description="Admin API requests a second per API key; 0: no limit"
    )
    rate_limit_store: Literal["auto", "memory", "redis"] = Field(
        default="auto",
        description="Where the rate-limit buckets live: auto is Redis when redis_url is set "
        "(shared by every process, one round trip per request), else memory; memory with "
        "Redis makes each process count alone (N processes let up to N times the rate in)",
    )
    rate_limit_burst_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A bucket holds this many seconds of its rate: the burst let through",
    )
    session_timeout_s: int = Field(default=20 * 60, ge=60, le=24 * 3600)
    max_event_age_s: int = Field(default=3600, ge=60, description="Older events are refused")
    max_future_skew_s: int = Field(default=120, ge=0)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    max_batch_events: int = Field(default=100, ge=1, le=10_000)
    retention_days: int = Field(default=395, ge=1)
    trusted_proxy_headers: bool = Field(
        default=False, description="Trust X-Forwarded-For and geo headers from a proxy"
    )
    geoip_db: Path | None = Field(default=None, description="Optional MaxMind .mmdb city file")
    commit_max_batch: int = Field(
        default=DEFAULT_COMMIT_MAX_BATCH, ge=1, description="Events per group commit"
    )
    webhook_secrets: dict[str, str] = Field(
        default_factory=dict,
        description='Secrets webhook headers may name as ${secret:NAME}, JSON: {"NAME": "..."}',
    )
    retrain_interval_h: float = Field(
        default=24.0, ge=0, le=24 * 365, description="Retrain outcome models this often; 0: never"
    )
    chat_grace_s: int = Field(
        default=120,
        ge=10,
        le=24 * 3600,
        description="A chatting visitor silent this long has left (abandoned before an agent)",
    )
    live_window_s: int = Field(
        default=600,
        ge=10,
        le=24 * 3600,
        description="Live Now forgets a visitor idle this long (seconds)",
    )
    live_max_visitors: int = Field(
        default=100_000, ge=1, description="Live Now keeps at most this many visitors"
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Server processes of `opportune serve` on one port; above 1 needs "
        "PostgreSQL and Redis",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="json: every log record one JSON line, and one line per request with "
        "its X-Request-Id (docs/deployment.md)",
    )
    metrics_dir: Path | None = Field(
        default=None,
        description="Folder where the processes of `serve --workers N` share their metrics; "
        "empty: `serve` makes a temporary one",
    )
    rules_poll_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Seconds between looks for API-changed rules",
    )
    rollup_interval_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Seconds between passes that bring the reports' rollups up to date",
    )
    rollup_margin_s: int = Field(
        default=30,
        ge=0,
        le=3600,
        description="Each rollup pass re-reads receipts this far back: a late commit counts",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        # Made absolute once, where the process starts, so that every use of it (a path
        # printed, a training subprocess, a model registry) names the same folder.
        return v.expanduser().absolute()

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if v and not v.startswith(("sqlite", "postgresql")):
            raise ValueError("OPPORTUNE_DATABASE_URL must start with sqlite:// or postgresql://")
        return v

    @model_validator(mode="after")
    def _rate_limit_store(self) -> Settings:
        if self.rate_limit_store == "redis" and not self.redis_url:
            raise ValueError("OPPORTUNE_RATE_LIMIT_STORE=redis needs OPPORTUNE_REDIS_URL")
        return self

    def resolved_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            return url
        return f"sqlite:///{(self.data_dir / 'opportune.db').resolve()}"
