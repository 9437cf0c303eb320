"""An uplift comparison (``core.valuation.compare``) as the admin API answers it."""

from __future__ import annotations

import math
from typing import Any

from opportune.core.valuation import Comparison


def uplift_json(c: Comparison) -> dict[str, Any]:
    """Uplift with its 95% interval and p-value (a relative uplift over 0 is null)."""
    return {
        "uplift": c.uplift,
        "relativeUplift": None if math.isnan(c.relative_uplift) else c.relative_uplift,
        "ciLow": c.ci_low,
        "ciHigh": c.ci_high,
        "pValue": c.p_value,
        "method": c.ci_method,
    }
