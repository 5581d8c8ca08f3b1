"""A saved LightGBM model scored through LightGBM's own shared library, without importing the ``lightgbm`` package
(serving's start-up path: see :class:`NativeModel`)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from semassoc.errors import SemassocError


class NativeModel:
    """A saved LightGBM model scored through LightGBM's own library (its C API: the calls ``Booster.predict`` makes,
    with the same arguments), without importing the ``lightgbm`` package: that import pulls in scipy and narwhals,
    most of a `semassoc related` process's start-up, for nothing serving needs. Same library, same model file, same
    numbers."""

    _lib: Any = None

    def __init__(self, lib: Any, handle: Any) -> None:
        self._owner = lib
        self._handle = handle

    @classmethod
    def library(cls) -> Any:
        """LightGBM's shared library, found where the package's ``libpath`` looks (None when it is not there)."""
        if cls._lib is None:
            import ctypes
            import importlib.util

            spec = importlib.util.find_spec("lightgbm")
            if spec is None or not spec.submodule_search_locations:
                return None
            package = Path(next(iter(spec.submodule_search_locations)))
            name = {"win32": "lib_lightgbm.dll", "darwin": "lib_lightgbm.dylib"}.get(sys.platform, "lib_lightgbm.so")
            found = [p / name for p in (package.parent, package / "bin", package / "lib") if (p / name).is_file()]
            if not found:
                return None
            lib = ctypes.cdll.LoadLibrary(str(found[0]))
            lib.LGBM_GetLastError.restype = ctypes.c_char_p
            cls._lib = lib
        return cls._lib

    @classmethod
    def load(cls, path: Path) -> NativeModel | None:
        import ctypes

        lib = cls.library()
        if lib is None:
            return None
        handle = ctypes.c_void_p()
        iterations = ctypes.c_int(0)
        cls._check(
            lib, lib.LGBM_BoosterCreateFromModelfile(str(path).encode(), ctypes.byref(iterations), ctypes.byref(handle))
        )
        return cls(lib, handle)

    @staticmethod
    def _check(lib: Any, code: int) -> None:
        if code != 0:
            raise SemassocError(f"LightGBM: {lib.LGBM_GetLastError().decode('utf-8', 'replace')}")

    def predict(self, x: np.ndarray, num_threads: int = 1) -> np.ndarray:
        """As ``lightgbm.Booster.predict(x, num_threads=...)`` of a model loaded from its file: normal predictions,
        every iteration."""
        import ctypes

        data = np.ascontiguousarray(x, dtype=np.float64)
        rows, cols = data.shape
        out = np.empty(rows, dtype=np.float64)
        written = ctypes.c_int64(0)
        self._check(
            self._owner,
            self._owner.LGBM_BoosterPredictForMat(
                self._handle,
                data.ctypes.data_as(ctypes.c_void_p),
                ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
                ctypes.c_int32(rows),
                ctypes.c_int32(cols),
                ctypes.c_int(1),  # row major
                ctypes.c_int(0),  # C_API_PREDICT_NORMAL
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(-1),  # every iteration (a loaded Booster's best_iteration)
                f"num_threads={num_threads}".encode(),
                ctypes.byref(written),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            ),
        )
        if written.value != rows:
            raise SemassocError(f"LightGBM returned {written.value} predictions for {rows} rows")
        return out

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown
            self._owner.LGBM_BoosterFree(self._handle)
