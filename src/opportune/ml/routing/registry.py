"""Versioned KPI models of predictive routing, one line of versions per queue.

The shared layout, activation log and rollback (:class:`~opportune.ml.registry.VersionRegistry`)
under ``<data_dir>/routing-models/<queue>/vN/`` with ``model.json`` (the fitted model, its
trees as LightGBM text), ``spec.json`` (the feature layout) and ``card.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opportune.ml.registry import VersionRegistry
from opportune.ml.routing.features import RoutingSpec
from opportune.ml.routing.model import RoutingModel


@dataclass(frozen=True)
class LoadedRouting:
    """A registered KPI model with its feature layout and card, ready to serve."""

    queue: str
    version: str
    model: RoutingModel
    spec: RoutingSpec
    card: dict[str, Any]


class RoutingRegistry(VersionRegistry):
    """KPI models by queue under ``root`` (``<data_dir>/routing-models``).

    >>> import tempfile
    >>> reg = RoutingRegistry(Path(tempfile.mkdtemp()))
    >>> reg.active_routing("sales") is None, reg.versions("sales")
    (True, [])
    """

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._routing: dict[tuple[str, str], LoadedRouting] = {}

    def save_routing(
        self, queue: str, model: RoutingModel, spec: RoutingSpec, card: dict[str, Any]
    ) -> str:
        """Write the next version of ``queue``'s model (not activated); return its name."""
        return self.save_version(
            queue,
            lambda version: {
                "model.json": json.dumps(model.to_json()),
                "spec.json": json.dumps(spec.to_json()),
                "card.json": json.dumps({**card, "version": version}, indent=1),
            },
        )

    def load_routing(self, queue: str, version: str) -> LoadedRouting:
        key = (queue, version)
        found = self._routing.get(key)
        if found is None:
            path = self._version_dir(queue, version)
            found = LoadedRouting(
                queue,
                version,
                RoutingModel.from_json(json.loads((path / "model.json").read_text("utf-8"))),
                RoutingSpec.from_json(json.loads((path / "spec.json").read_text("utf-8"))),
                json.loads((path / "card.json").read_text("utf-8")),
            )
            self._routing[key] = found
        return found

    def active_routing(self, queue: str) -> LoadedRouting | None:
        """The active model of ``queue`` (cached per version), or None."""
        version = self.active_version(queue)
        return None if version is None else self.load_routing(queue, version)
