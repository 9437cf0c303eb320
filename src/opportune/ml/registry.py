"""Versioned models on disk, one line of versions per name, the active one, and rollback:
the plumbing the outcome models (``ml/outcomes/registry.py``) and the routing KPI models
(``ml/routing/registry.py``) share.

Layout under the registry's root::

    <name>/
      v1/ card.json ...   one directory per version (its files are the model kind's)
      v2/ ...
      active         the active version's name ("v2"), replaced atomically
      history.json   {"stack": [versions activated, oldest first], "log": [...]}

A version directory is written whole under a temporary name and renamed into place, so a
reader never sees half a model; ``active`` is replaced with ``os.replace``. A version whose
card says it failed its activation check when trained is activated only with ``force``.
Rollback re-activates the version that was active before the current one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_VERSION = re.compile(r"^v([1-9][0-9]*)$")


class RegistryError(Exception):
    """A request the registry cannot carry out (unknown outcome or version, nothing to
    roll back to); the message says which."""


class ActivationRefused(RegistryError):
    """The version failed the activation check when it was trained; ``force`` overrides."""


def _iso(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


class VersionRegistry:
    """Versions of every name (an outcome, a queue) under ``root``.

    >>> import tempfile
    >>> reg = VersionRegistry(Path(tempfile.mkdtemp()))
    >>> reg.save_version("demo", lambda v: {"card.json": json.dumps({"version": v})})
    'v1'
    >>> reg.activate("demo", "v1", now_ms=0)
    >>> reg.names(), reg.versions("demo"), reg.active_version("demo")
    (['demo'], ['v1'], 'v1')
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- reading -----------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        if not _NAME.match(name):
            raise RegistryError(f"{name!r} is not an outcome name")
        return self.root / name

    def names(self) -> list[str]:
        """Names with at least one saved version."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _NAME.match(p.name) and p.is_dir())

    def versions(self, name: str) -> list[str]:
        """Saved versions of ``name``, oldest first."""
        d = self._dir(name)
        if not d.is_dir():
            return []
        found = [
            (int(m.group(1)), p.name)
            for p in d.iterdir()
            if (m := _VERSION.match(p.name)) and (p / "card.json").is_file()
        ]
        return [name for _, name in sorted(found)]

    def active_version(self, name: str) -> str | None:
        try:
            text = (self._dir(name) / "active").read_text("utf-8").strip()
        except FileNotFoundError:
            return None
        return text or None

    def card(self, name: str, version: str) -> dict[str, Any]:
        path = self._version_dir(name, version) / "card.json"
        data: dict[str, Any] = json.loads(path.read_text("utf-8"))
        return data

    def last_trained_at(self, name: str) -> int | None:
        """When the newest version of ``name`` was trained (ms), or None."""
        versions = self.versions(name)
        if not versions:
            return None
        return int(self.card(name, versions[-1]).get("trainedAtMs") or 0) or None

    def history(self, name: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self._dir(name) / "history.json").read_text("utf-8"))
        except FileNotFoundError:
            return {"stack": [], "log": []}
        return data

    def _version_dir(self, name: str, version: str) -> Path:
        if not _VERSION.match(version):
            raise RegistryError(f"{version!r} is not a version (v1, v2, ...)")
        path = self._dir(name) / version
        if not (path / "card.json").is_file():
            raise RegistryError(f"{name} has no version {version}")
        return path

    # -- writing -----------------------------------------------------------------------

    def save_version(self, name: str, files: Callable[[str], Mapping[str, str]]) -> str:
        """Write the next version of ``name`` (not activated) and return it: ``files``
        gives, for the version's name, each file's name and text."""
        d = self._dir(name)
        d.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=d))
        try:
            while True:
                versions = self.versions(name)
                version = f"v{int(versions[-1][1:]) + 1 if versions else 1}"
                for file, text in files(version).items():
                    (tmp / file).write_text(text, "utf-8")
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

    def activate(
        self,
        name: str,
        version: str,
        *,
        force: bool = False,
        by: str = "hand",
        now_ms: float | None = None,
    ) -> None:
        """Make ``version`` the active model of ``name``.

        A version whose activation check failed when it was trained (it was worse than
        the model then active) is refused unless ``force``.
        """
        card = self.card(name, version)
        check = card.get("activation") or {}
        if check.get("notWorse") is False and not force:
            raise ActivationRefused(
                f"{name} {version} was worse than {check.get('comparedWith')} when trained "
                f"({check.get('reason')}); activate it with force to override"
            )
        hist = self.history(name)
        if not hist["stack"] or hist["stack"][-1] != version:
            hist["stack"].append(version)
        self._log(hist, "activate", version, "force" if force else by, now_ms)
        self._write_active(name, version, hist)

    def rollback(self, name: str, *, now_ms: float | None = None) -> str:
        """Re-activate the version active before the current one; return its name."""
        hist = self.history(name)
        stack = hist["stack"]
        current = self.active_version(name)
        if current is not None and stack and stack[-1] == current:
            stack.pop()
        while stack and not (self._dir(name) / stack[-1] / "card.json").is_file():
            stack.pop()
        if not stack:
            raise RegistryError(f"{name} has no earlier active version to roll back to")
        version = str(stack[-1])
        self._log(hist, "rollback", version, "hand", now_ms)
        self._write_active(name, version, hist)
        return version

    @staticmethod
    def _log(
        hist: dict[str, Any], action: str, version: str, by: str, now_ms: float | None
    ) -> None:
        at = time.time() * 1000 if now_ms is None else now_ms
        hist["log"].append({"at": _iso(at), "action": action, "version": version, "by": by})

    def _write_active(self, name: str, version: str, hist: dict[str, Any]) -> None:
        d = self._dir(name)
        for file, text in (("history.json", json.dumps(hist, indent=1)), ("active", version)):
            fd, tmp = tempfile.mkstemp(prefix=f".{file}-", dir=d)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, d / file)

    @contextlib.contextmanager
    def training_lock(self) -> Iterator[bool]:
        """An exclusive, non-blocking lock on this registry across processes: yields
        whether it was taken (released on exit, or when the process dies)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".training.lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
