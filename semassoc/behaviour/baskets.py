"""The timestamped basket log kept beside the pair statistics: per basket its products and its time.

The pair statistics say which products go together, not when; learning the ranker of ``related`` (``semassoc fit``)
needs the time of each basket, to replay the store's history at cuts inside it. The log is written into the same
directory, by the same atomic write, as the statistics (``behavior build``; ``behavior update`` appends), so the two
always describe the same baskets.

Files (in the behaviour directory): ``log_indptr.npy`` and ``log_items.npy`` (CSR rows: the codes, into the
statistics' ``item_ids.npy``, of each basket's distinct products), ``log_time.npy`` (the basket's first event time,
int64 microseconds since the epoch, ``MISSING`` when the events had no time), ``log_first_seen.npy`` (per product, the
time of its first timed basket, ``MISSING`` when none).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from semassoc.behaviour.npy_stream import row_blocks

if TYPE_CHECKING:
    import scipy.sparse as sp

    from semassoc.behaviour.events import Events

MISSING = np.iinfo(np.int64).min
FILES = ("log_indptr.npy", "log_items.npy", "log_time.npy", "log_first_seen.npy")


#: The mixing constants of splitmix64 (``content_hash``), also used by the Spark engine's SQL twin.
MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def content_hash(items: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Per basket, the sum (mod 2**64) of splitmix64 of its product codes: the last key of the canonical order
    (equal for equal contents, whatever their order; 0 for an empty basket). Computed in blocks of baskets, so the
    temporaries stay small whatever the log's length."""
    out = np.zeros(int(indptr.shape[0]) - 1, dtype=np.uint64)
    for first, stop in row_blocks(indptr):
        start, end = int(indptr[first]), int(indptr[stop])
        if end == start:
            continue
        with np.errstate(over="ignore"):
            z = items[start:end].astype(np.uint64) + np.uint64(MIX[0])
            z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX[1])
            z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX[2])
            z = z ^ (z >> np.uint64(31))
            filled = np.flatnonzero(np.diff(indptr[first : stop + 1]) > 0)
            out[first + filled] = np.add.reduceat(z, indptr[first + filled] - start)
    return out


def item_dtype(n_items: int) -> type[np.unsignedinteger]:
    """The type of ``log_items.npy`` for a vocabulary of ``n_items`` products."""
    return np.uint16 if n_items <= np.iinfo(np.uint16).max + 1 else np.uint32


@dataclass
class BasketLog:
    """Baskets in canonical order (time, then content), as a CSR of product codes plus one time per basket.

    Attributes:
        indptr / items: basket ``b`` holds products ``items[indptr[b]:indptr[b + 1]]`` (codes into ``item_ids``).
        time: first event time of each basket (int64 microseconds, ``MISSING`` when unknown).
        n_items: size of the product vocabulary the codes index.
    """

    indptr: np.ndarray
    items: np.ndarray
    time: np.ndarray
    n_items: int

    @classmethod
    def from_matrix(cls, matrix: sp.csr_matrix, basket_codes: np.ndarray, events: Events) -> BasketLog:
        """The log of a basket x product matrix built from ``events`` (rows = ``basket_codes``)."""
        time = np.full(basket_codes.shape[0], MISSING, dtype=np.int64)
        if events.timestamp is not None and events.basket.size:
            stamps = events.timestamp.astype("datetime64[us]")
            known = ~np.isnat(stamps)
            big = np.iinfo(np.int64).max
            start = np.full(events.n_baskets, big, dtype=np.int64)
            np.minimum.at(start, events.basket[known], stamps[known].astype(np.int64))
            time = start[basket_codes]
            time[time == big] = MISSING
        matrix = matrix.tocsr()
        matrix.sort_indices()
        log = cls(matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64), time, int(matrix.shape[1]))
        return log.canonical()

    @staticmethod
    def exists(directory: str | Path) -> bool:
        return all((Path(directory) / name).is_file() for name in FILES)

    @classmethod
    def load(cls, directory: str | Path, n_items: int) -> BasketLog:
        d = Path(directory)
        return cls(
            np.load(d / "log_indptr.npy").astype(np.int64),
            np.load(d / "log_items.npy").astype(np.int64),
            np.load(d / "log_time.npy").astype(np.int64),
            n_items,
        )

    @staticmethod
    def load_first_seen(directory: str | Path) -> np.ndarray:
        """Per product code, the time of its first timed basket (``MISSING`` when none)."""
        return np.load(Path(directory) / "log_first_seen.npy", mmap_mode="r")

    def __len__(self) -> int:
        return int(self.time.shape[0])

    def reindexed(self, mapping: np.ndarray, n_items: int) -> BasketLog:
        """The same baskets with product codes moved to ``mapping[code]`` in a vocabulary of ``n_items``."""
        return BasketLog(self.indptr, mapping[self.items].astype(np.int64), self.time, n_items)

    def concat(self, other: BasketLog) -> BasketLog:
        """This log and ``other`` (same vocabulary) together, in canonical order."""
        indptr = np.r_[self.indptr, other.indptr[1:] + self.indptr[-1]].astype(np.int64)
        joined = BasketLog(
            indptr, np.r_[self.items, other.items], np.r_[self.time, other.time], max(self.n_items, other.n_items)
        )
        return joined.canonical()

    def canonical(self) -> BasketLog:
        """The baskets sorted by time, then by content: the same baskets give the same files whether they were
        built at once or through updates (unknown times first)."""
        if len(self) == 0:
            return self
        sizes = np.diff(self.indptr)
        order = np.lexsort((content_hash(self.items, self.indptr), sizes, self.time))
        if np.array_equal(order, np.arange(order.shape[0])):
            return self
        starts = self.indptr[:-1][order]
        new_sizes = sizes[order]
        indptr = np.r_[0, np.cumsum(new_sizes)].astype(np.int64)
        items = np.empty_like(self.items)
        for first, stop in row_blocks(indptr):  # gathered in blocks: no full-length index array
            start, end = int(indptr[first]), int(indptr[stop])
            shift = starts[first:stop] - indptr[first:stop]
            items[start:end] = self.items[np.repeat(shift, new_sizes[first:stop]) + np.arange(start, end)]
        return BasketLog(indptr, items, self.time[order], self.n_items)

    def first_seen(self) -> np.ndarray:
        """Per product code, the first time it appears in a timed basket (``MISSING`` when never)."""
        big = np.iinfo(np.int64).max
        out = np.full(self.n_items, big, dtype=np.int64)
        per_entry = np.repeat(self.time, np.diff(self.indptr))
        timed = per_entry != MISSING
        np.minimum.at(out, self.items[timed], per_entry[timed])
        out[out == big] = MISSING
        return out

    def matrix(self, rows: np.ndarray | None = None) -> sp.csr_matrix:
        """Basket x product 0/1 matrix (all baskets, or the ``rows`` given, in that order)."""
        import scipy.sparse as sp

        full = sp.csr_matrix(
            (np.ones(self.items.shape[0], dtype=np.int32), self.items, self.indptr),
            shape=(len(self), self.n_items),
        )
        return full if rows is None else full[rows]

    def fingerprint(self) -> str:
        """sha256 of the log's content (the data lineage of a fitted ranker)."""
        digest = hashlib.sha256()
        for array in (self.indptr, self.items, self.time):
            digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        return digest.hexdigest()

    def save(self, directory: Path) -> None:
        """Write the log's files into ``directory`` (inside the statistics' atomic write)."""
        np.save(directory / "log_indptr.npy", self.indptr.astype(np.int64))
        np.save(directory / "log_items.npy", self.items.astype(item_dtype(self.n_items)))
        np.save(directory / "log_time.npy", self.time.astype(np.int64))
        np.save(directory / "log_first_seen.npy", self.first_seen())
