"""The typed documents a workspace holds. Field names are camelCase in YAML and JSON."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class Document(BaseModel):
    """Base of every workspace document: unknown fields are errors, names are slugs."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class Site(Document):
    """A website that embeds the snippet: its public key and where it may be called from."""

    kind: Literal["site"] = "site"
    name: str = Field(pattern=_NAME)
    key: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    origins: list[str] = Field(min_length=1)
    session_timeout_minutes: int = Field(default=20, ge=1, le=24 * 60)
    default_phone_region: str = Field(default="US", pattern=r"^[A-Z]{2}$")

    @field_validator("origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin == "*":
                continue
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{origin!r} is not an origin like https://www.example.com")
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(f"{origin!r}: an origin has no path, query or fragment")
        return [o.rstrip("/") for o in origins]

    def allows_origin(self, origin: str | None) -> bool:
        """Whether a browser at ``origin`` may send events for this site."""
        if "*" in self.origins:
            return True
        return origin is not None and origin.rstrip("/") in self.origins


KINDS: dict[str, type[Document]] = {"site": Site}
