"""One-dimensional ``.npy`` files written and read in pieces, so that arrays larger than the memory a build may use
go to disk without ever being whole in memory (the Spark engine's result, the neighbour lists of large builds).

A file written by :class:`NpyWriter` has exactly the bytes ``np.save`` gives for the whole array: numpy pads the
header so that the length can be rewritten in place, so the writer puts a header first, appends the pieces, and
rewrites the header with the final length when it closes.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import numpy as np

#: Entries per piece when a large array is copied or scanned in blocks (8-16 MB per column).
BLOCK = 2_000_000


def row_blocks(indptr: np.ndarray, block: int | None = None) -> Iterator[tuple[int, int]]:
    """Ranges of whole CSR rows holding about ``block`` (default ``BLOCK``) entries each (a longer row is a block of
    its own)."""
    step = BLOCK if block is None else block
    size = int(indptr.shape[0]) - 1
    start = 0
    while start < size:
        stop = int(np.searchsorted(indptr, int(indptr[start]) + step, side="right")) - 1
        stop = min(max(stop, start + 1), size)
        yield start, stop
        start = stop


def _header(dtype: np.dtype, length: int) -> bytes:
    buffer = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(dtype)
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": (length,)})
    return buffer.getvalue()


class NpyWriter:
    """Appends pieces to a 1-D ``.npy`` file of ``dtype``; the length is known only when it is closed.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "a.npy"
        >>> with NpyWriter(path, np.uint16) as out:
        ...     out.write(np.arange(3))
        ...     out.write(np.arange(2))
        >>> np.load(path).tolist()
        [0, 1, 2, 0, 1]
    """

    def __init__(self, path: str | Path, dtype: type | np.dtype) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.length = 0
        self._file = self.path.open("wb")
        self._header_size = len(_header(self.dtype, 0))
        self._file.write(_header(self.dtype, 0))

    def write(self, piece: np.ndarray) -> None:
        """Append ``piece`` (cast to the file's dtype)."""
        data = np.ascontiguousarray(np.asarray(piece).astype(self.dtype, copy=False))
        data.tofile(self._file)
        self.length += int(data.shape[0])

    def close(self) -> None:
        """Rewrite the header with the final length and close the file."""
        if self._file.closed:
            return
        header = _header(self.dtype, self.length)
        if len(header) != self._header_size:  # cannot happen with numpy's growth padding; never write a bad file
            self._file.close()
            raise RuntimeError(f"{self.path}: the .npy header grew from {self._header_size} to {len(header)} bytes")
        self._file.seek(0)
        self._file.write(header)
        self._file.close()

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def save_blocks(path: str | Path, array: np.ndarray, dtype: type | np.dtype) -> None:
    """``np.save(path, array.astype(dtype))`` without the whole converted copy in memory."""
    with NpyWriter(path, dtype) as out:
        for start in range(0, int(array.shape[0]), BLOCK):
            out.write(array[start : start + BLOCK])


class NpyReader:
    """Reads ranges of a 1-D ``.npy`` file with ordinary reads (no memory map: what was read is freed with it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with self.path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            self.offset = fh.tell()
        if len(shape) != 1:
            raise ValueError(f"{self.path}: not a one-dimensional array")
        self.dtype = np.dtype(dtype)
        self.length = int(shape[0])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Entries ``start:stop``."""
        start, stop = max(start, 0), min(stop, self.length)
        if stop <= start:
            return np.zeros(0, dtype=self.dtype)
        offset = self.offset + start * self.dtype.itemsize
        return np.fromfile(self.path, dtype=self.dtype, count=stop - start, offset=offset)
