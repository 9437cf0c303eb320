"""Versioned KPI models of predictive routing, one line of versions per queue.

The same layout, activation log and rollback as the outcome models (``ml/registry.py``),
under ``<data_dir>/routing-models/<queue>/vN/`` with ``model.json`` (the fitted model,
its trees as LightGBM text), ``spec.json`` (the feature layout) and ``card.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opportune.ml.registry import ModelRegistry
from opportune.ml.routing_history import RoutingSpec
from opportune.ml.routing_model import RoutingModel


@dataclass(frozen=True)
class LoadedRouting:
    queue: str
    version: str
    model: RoutingModel
    spec: RoutingSpec
    card: dict[str, Any]


class RoutingRegistry(ModelRegistry):
    """KPI models by queue under ``root`` (``<data_dir>/routing-models``)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._routing: dict[tuple[str, str], LoadedRouting] = {}

    def save_routing(
        self, queue: str, model: RoutingModel, spec: RoutingSpec, card: dict[str, Any]
    ) -> str:
        """Write the next version of ``queue``'s model (not activated); return its name."""
        d = self._dir(queue)
        d.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=d))
        try:
            while True:
                versions = self.versions(queue)
                version = f"v{int(versions[-1][1:]) + 1 if versions else 1}"
                (tmp / "model.json").write_text(json.dumps(model.to_json()), "utf-8")
                (tmp / "spec.json").write_text(json.dumps(spec.to_json()), "utf-8")
                (tmp / "card.json").write_text(
                    json.dumps({**card, "version": version}, indent=1), "utf-8"
                )
                try:
                    os.rename(tmp, d / version)  # fails if another process took the name
                except OSError:
                    if (d / version).exists():
                        continue
                    raise
                return version
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

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
        version = self.active_version(queue)
        return None if version is None else self.load_routing(queue, version)
