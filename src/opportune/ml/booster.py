"""One-row LightGBM scoring fast enough for the per-event hot path.

``Booster.predict`` on a one-row array costs ~60 µs at p50 on these machines, and its
OpenMP pool turns some calls into milliseconds (p99 ~2 ms with two threads). A pure-Python
evaluator compiled from ``dump_model()`` (nested ifs) was measured at ~70 µs for 300
trees. LightGBM's own single-row C entry point (``LGBM_BoosterPredictForMatSingleRowFast``,
set up once per model with one thread) runs the same C++ tree code in ~20 µs, p99 ~30 µs,
so it is what serving uses; its scores equal ``Booster.predict`` exactly. If that entry
point is missing (another LightGBM build), the predictor falls back to ``Booster.predict``
with one thread.

Of that, with 300 trees and warm caches, the C call is ~2 µs (~5–7 µs in the server, where
the trees are cold); copying the row into C doubles cost more than that (~3 µs with
ctypes' slice assignment, ~1.3 µs with ``struct``). A :class:`PackedRow`
carries its C doubles with it, so the several models of one feature layout read one
copy (the live scorer packs each event's vector once).

Serving loads LightGBM's shared library itself, not the ``lightgbm`` package: importing
that imports scikit-learn and SciPy with it (~90 MB of a server's resident memory), which
only training and explanations need; they import it when they run.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import logging
import struct
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import lightgbm as lgb

log = logging.getLogger(__name__)
_RAW_SCORE = 1  # C_API_PREDICT_RAW_SCORE
_FLOAT64 = 1  # C_API_DTYPE_FLOAT64


@functools.cache
def _lib() -> Any:
    """LightGBM's C library, loaded from the installed package's folder without running
    the package (the same file ``lightgbm`` loads: the process shares one copy)."""
    spec = importlib.util.find_spec("lightgbm")
    folders = spec.submodule_search_locations if spec is not None else None
    for folder in folders or ():
        for name in ("lib/lib_lightgbm.so", "lib/lib_lightgbm.dylib", "bin/lib_lightgbm.dll"):
            path = Path(folder) / name
            if path.is_file():
                lib = ctypes.cdll.LoadLibrary(str(path))
                lib.LGBM_GetLastError.restype = ctypes.c_char_p
                return lib
    from lightgbm import basic  # another layout: let the package find it

    return basic._LIB  # type: ignore[attr-defined]


def _check(code: int) -> None:
    if code != 0:
        message = _lib().LGBM_GetLastError()
        raise RuntimeError(f"LightGBM: {ctypes.c_char_p(message).value!r}")


def _free(lib: Any, fast: ctypes.c_void_p, booster: ctypes.c_void_p) -> None:
    if fast:
        lib.LGBM_FastConfigFree(fast)
    if booster:
        lib.LGBM_BoosterFree(booster)


@functools.lru_cache(maxsize=32)
def _packer(n: int) -> struct.Struct:
    return struct.Struct(f"{n}d")


class PackedRow(list[float]):
    """A feature vector (still a list) with its values packed once as C doubles, for
    several :class:`RowPredictor` calls on the same row. Not to be changed after packing."""

    __slots__ = ("doubles",)

    def __init__(self, x: list[float]) -> None:
        super().__init__(x)
        # Immutable bytes: ctypes passes their buffer as the row pointer, which LightGBM
        # only reads.
        self.doubles = _packer(len(x)).pack(*x)


class RowPredictor:
    """Raw scores (log-odds) of a LightGBM model, one row at a time, without numpy.

    Safe to call from several threads (a lock guards the one input buffer).
    """

    def __init__(self, model_text: str, n_features: int) -> None:
        self.n_features = n_features
        self._lock = threading.Lock()
        self._fn: Any = None
        self._fallback: lgb.Booster | None = None
        try:
            self._init_fast(model_text)
        except (AttributeError, OSError, RuntimeError) as exc:
            import lightgbm as lgb

            log.warning("LightGBM single-row entry point unavailable (%s): using predict()", exc)
            self._fallback = lgb.Booster(model_str=model_text)

    def _init_fast(self, model_text: str) -> None:
        lib = _lib()
        booster = ctypes.c_void_p()
        iterations = ctypes.c_int()
        _check(
            lib.LGBM_BoosterLoadModelFromString(
                model_text.encode(), ctypes.byref(iterations), ctypes.byref(booster)
            )
        )
        fast = ctypes.c_void_p()
        try:
            _check(
                lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                    booster,
                    ctypes.c_int(_RAW_SCORE),
                    ctypes.c_int(0),
                    ctypes.c_int(-1),
                    ctypes.c_int(_FLOAT64),
                    ctypes.c_int32(self.n_features),
                    b"num_threads=1",
                    ctypes.byref(fast),
                )
            )
        except RuntimeError:
            lib.LGBM_BoosterFree(booster)
            raise
        weakref.finalize(self, _free, lib, fast, booster)
        fn = lib.LGBM_BoosterPredictForMatSingleRowFast
        fn.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_int64),
            ctypes.POINTER(ctypes.c_double),
        ]
        fn.restype = ctypes.c_int
        self._fast = fast
        self._buf = (ctypes.c_double * self.n_features)()
        self._pack = _packer(self.n_features).pack_into
        self._out = ctypes.c_double()
        self._len = ctypes.c_int64()
        self._pout = ctypes.byref(self._out)
        self._plen = ctypes.byref(self._len)
        self._fn = fn

    @property
    def fast(self) -> bool:
        """Whether the C single-row path is in use."""
        return self._fn is not None

    def __call__(self, x: list[float]) -> float:
        if len(x) != self.n_features:
            raise ValueError(f"{len(x)} features given; the model takes {self.n_features}")
        if self._fn is None:
            assert self._fallback is not None
            row = np.asarray([x], dtype=np.float64)
            return float(self._fallback.predict(row, raw_score=True, num_threads=1)[0])
        with self._lock:
            if type(x) is PackedRow:
                code = self._fn(self._fast, x.doubles, self._plen, self._pout)
            else:
                self._pack(self._buf, 0, *x)
                code = self._fn(self._fast, self._buf, self._plen, self._pout)
            if code != 0:
                _check(code)
            return self._out.value


def raw_scores(booster: lgb.Booster, X: np.ndarray, num_threads: int = 0) -> np.ndarray:
    """Raw scores (log-odds) of many rows; ``num_threads`` 0 is LightGBM's default.

    >>> import lightgbm as lgb
    >>> X = np.array([[0.0], [1.0]] * 20); y = np.array([0, 1] * 20)
    >>> params = {"objective": "binary", "verbose": -1, "min_data_in_leaf": 1}
    >>> b = lgb.train(params, lgb.Dataset(X, y), num_boost_round=2)
    >>> s = raw_scores(b, X[:2], num_threads=1)
    >>> bool(s[0] < s[1]), RowPredictor(b.model_to_string(), 1)([1.0]) == float(s[1])
    (True, True)
    """
    """Raw scores (log-odds) of many rows at once (evaluation; 0 threads: LightGBM's
    default)."""
    out = booster.predict(X, raw_score=True, num_threads=num_threads)
    return np.asarray(out, dtype=np.float64)
