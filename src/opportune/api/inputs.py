"""What the admin API's request bodies share: camelCase on the wire, unknown fields refused;
and the server's clock in milliseconds."""

from __future__ import annotations

import time
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CamelIn(BaseModel):
    """A request body: fields in camelCase (snake_case accepted), extra fields refused."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


def now_ms() -> int:
    return int(time.time() * 1000)


def to_ms(value: datetime | int) -> int:
    """A date posted as ISO 8601 or as epoch milliseconds, in milliseconds."""
    return value if isinstance(value, int) else int(value.timestamp() * 1000)
