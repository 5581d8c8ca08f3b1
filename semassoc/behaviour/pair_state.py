"""The exact pair statistics as arrays (every pair count, product counts, basket count, weighted grams, basket log)
and their files: computed from events, loaded, merged (``behavior update`` is a merge, equal to a rebuild) and
written atomically. :class:`semassoc.behaviour.stats.BehaviourStats` opens and queries what this writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from semassoc.behaviour.baskets import BasketLog
from semassoc.behaviour.cooccurrence import basket_item_matrix, pair_counts
from semassoc.behaviour.weightings import METRICS, RANKED_METRICS
from semassoc.io import replace_directory

if TYPE_CHECKING:  # scipy and the events reader (pyarrow) load only where statistics are built
    import scipy.sparse as sp

    from semassoc.behaviour.events import Events

SCHEMA_VERSION = 1
#: progress(stage, step, steps)
Progress = Callable[[str, int, int], None]


def _neighbour_lists(
    pairs: sp.csr_matrix,
    counts: np.ndarray,
    n_baskets: int,
    min_count: int,
    top_k: int | None,
    weighted_pairs: sp.csr_matrix | None,
    wnorm2: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Per product, the neighbours with count >= min_count; with ``top_k``, only those ranking in the top ``top_k``
    by some metric (ties at the cut are all kept, so a query for ``k <= top_k`` is exact)."""
    keep = pairs.data >= min_count
    kept_before = np.r_[0, np.cumsum(keep)]
    indptr = kept_before[pairs.indptr].astype(np.int64)
    cols = pairs.indices[keep]
    pair = pairs.data[keep]
    # Same sparsity pattern as pairs (see _align), so the entries line up.
    wdot = None if weighted_pairs is None else weighted_pairs.data[keep]
    lengths = np.diff(indptr)
    if top_k is not None and (lengths > top_k).any():
        selected = np.ones(cols.shape[0], dtype=bool)
        for row in np.flatnonzero(lengths > top_k).tolist():
            start, stop = int(indptr[row]), int(indptr[row + 1])
            c = cols[start:stop]
            p = pair[start:stop]
            left, right = counts[row], counts[c]
            scores = []
            for name in RANKED_METRICS:
                if name == "cosine" and wdot is not None and wnorm2 is not None:
                    scores.append(wdot[start:stop] / np.sqrt(wnorm2[row] * wnorm2[c]))
                else:
                    scores.append(METRICS[name](p, left, right, n_baskets))
            stacked = np.stack(scores)
            kth = np.partition(stacked, stop - start - top_k, axis=1)[:, stop - start - top_k]
            selected[start:stop] = (stacked >= kth[:, None]).any(axis=0)
        kept_before = np.r_[0, np.cumsum(selected)]
        indptr = kept_before[indptr].astype(np.int64)
        cols, pair = cols[selected], pair[selected]
        if wdot is not None:
            wdot = wdot[selected]
    count_dtype = _narrow_unsigned(int(counts.max(initial=0)))
    index_dtype = _narrow_unsigned(max(pairs.shape[0] - 1, 0))
    return indptr, cols.astype(index_dtype), pair.astype(count_dtype), wdot


def _narrow_unsigned(largest: int) -> type[np.unsignedinteger]:
    """The smallest unsigned type holding ``largest``: counts and column indices go to disk as narrow as they fit
    (a pair count never exceeds its products' basket counts), which halves what a build writes on typical data."""
    for dtype in (np.uint16, np.uint32):
        if largest <= np.iinfo(dtype).max:
            return dtype
    return np.uint64


@dataclass
class PairState:
    """Everything an exact update needs: full pair counts, product counts, basket count (and weighted grams)."""

    item_ids: np.ndarray
    item_counts: np.ndarray
    pairs: sp.csr_matrix
    baskets: int
    weighted_pairs: sp.csr_matrix | None = None
    wnorm2: np.ndarray | None = None
    log: BasketLog | None = None  # the timestamped baskets (None for statistics built before the log existed)

    @classmethod
    def from_events(
        cls, events: Events, weighted: bool, event_types: Sequence[str] | None, progress: Progress | None
    ) -> PairState:
        if progress:
            progress("basket matrix", 1, 4)
        binary, basket_codes = basket_item_matrix(events, event_types=event_types)
        log = BasketLog.from_matrix(binary, basket_codes, events)
        if progress:
            progress("pair counts", 2, 4)
        pairs, counts = pair_counts(binary)
        weighted_pairs = wnorm2 = None
        if weighted:
            weights, _ = basket_item_matrix(events, weighted=True, event_types=event_types)
            weighted_pairs, wnorm2 = pair_counts(weights)
            weighted_pairs = _align(weighted_pairs, pairs)
        return cls(events.item_ids, counts.astype(np.int64), pairs, binary.shape[0], weighted_pairs, wnorm2, log)

    @classmethod
    def load(cls, directory: Path, weighted: bool) -> PairState:
        import scipy.sparse as sp

        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        item_ids = np.load(directory / "item_ids.npy").astype(object)
        size = item_ids.shape[0]
        indptr = np.load(directory / "pairs_indptr.npy")
        # Back from the narrow on-disk types: scipy wants int32/int64 indices, and sums must not overflow.
        indices = np.load(directory / "pairs_indices.npy").astype(np.int32)
        counts = np.load(directory / "pairs_counts.npy").astype(np.int64)
        pairs = sp.csr_matrix((counts, indices, indptr), shape=(size, size))
        weighted_pairs = wnorm2 = None
        if weighted:
            wdot = np.load(directory / "pairs_wdot.npy")
            weighted_pairs = sp.csr_matrix((wdot, indices, indptr), shape=(size, size))
            wnorm2 = np.load(directory / "item_wnorm2.npy")
        log = BasketLog.load(directory, size) if BasketLog.exists(directory) else None
        return cls(
            item_ids,
            np.load(directory / "item_counts.npy"),
            pairs,
            int(manifest["baskets"]),
            weighted_pairs,
            wnorm2,
            log,
        )

    def merge(self, other: PairState) -> PairState:
        union = np.union1d(self.item_ids, other.item_ids) if other.item_ids.size else self.item_ids
        mine = np.searchsorted(union, self.item_ids)
        theirs = np.searchsorted(union, other.item_ids)
        counts = np.zeros(union.shape[0], dtype=np.int64)
        counts[mine] += self.item_counts
        counts[theirs] += other.item_counts
        pairs = (_reindex(self.pairs, mine, union.size) + _reindex(other.pairs, theirs, union.size)).tocsr()
        pairs.sum_duplicates()
        pairs.sort_indices()
        weighted_pairs = wnorm2 = None
        if self.weighted_pairs is not None and other.weighted_pairs is not None:
            wnorm2 = np.zeros(union.shape[0], dtype=np.float64)
            wnorm2[mine] += self.wnorm2  # type: ignore[arg-type]
            wnorm2[theirs] += other.wnorm2  # type: ignore[arg-type]
            weighted_pairs = _reindex(self.weighted_pairs, mine, union.size) + _reindex(
                other.weighted_pairs, theirs, union.size
            )
            weighted_pairs = _align(weighted_pairs.tocsr(), pairs)
        log = None
        if self.log is not None and other.log is not None:  # an old log-less directory stays log-less
            log = self.log.reindexed(mine, union.size).concat(other.log.reindexed(theirs, union.size))
        return PairState(union, counts, pairs, self.baskets + other.baskets, weighted_pairs, wnorm2, log)

    def write(
        self,
        directory: Path,
        options: Mapping[str, object],
        sources: Sequence[Sequence[str]],
        *,
        created: datetime,
        updated: datetime,
        progress: Progress | None,
        extra: Callable[[Path], None] | None = None,
    ) -> None:
        """Write the statistics as one directory, atomically; ``extra(tmp)`` adds more files (user histories,
        options) to the same write."""
        if progress:
            progress("neighbour lists", 3, 4)
        top_k = options["top_k"]
        truncated = None
        if top_k is not None:
            truncated = _neighbour_lists(
                self.pairs,
                self.item_counts,
                self.baskets,
                int(options["min_count"]),  # type: ignore[call-overload]
                int(top_k),  # type: ignore[call-overload]
                self.weighted_pairs,
                self.wnorm2,
            )
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "baskets": int(self.baskets),
            "items": int(self.item_ids.shape[0]),
            "pairs": int(self.pairs.nnz // 2),
            "neighbour_pairs": int(self.pairs.nnz if truncated is None else truncated[1].shape[0]),
            **options,
            "created": created.isoformat(),
            "last_update": updated.isoformat(),
            "sources": [list(s) for s in sources],
        }
        count_dtype = _narrow_unsigned(int(self.item_counts.max(initial=0)))
        index_dtype = _narrow_unsigned(max(self.item_ids.shape[0] - 1, 0))

        def write_files(tmp: Path) -> None:
            width = max((len(s) for s in self.item_ids.tolist()), default=1)
            np.save(tmp / "item_ids.npy", self.item_ids.astype(f"<U{width}"))
            np.save(tmp / "item_counts.npy", self.item_counts.astype(np.int64))
            np.save(tmp / "pairs_indptr.npy", self.pairs.indptr.astype(np.int64))
            np.save(tmp / "pairs_indices.npy", self.pairs.indices.astype(index_dtype))
            np.save(tmp / "pairs_counts.npy", self.pairs.data.astype(count_dtype))
            if self.weighted_pairs is not None:
                np.save(tmp / "pairs_wdot.npy", self.weighted_pairs.data.astype(np.float64))
                np.save(tmp / "item_wnorm2.npy", np.asarray(self.wnorm2, dtype=np.float64))
            if truncated is not None:
                indptr, indices, counts, wdot = truncated
                np.save(tmp / "nbr_indptr.npy", indptr)
                np.save(tmp / "nbr_indices.npy", indices)
                np.save(tmp / "nbr_counts.npy", counts)
                if wdot is not None:
                    np.save(tmp / "nbr_wdot.npy", wdot)
            if self.log is not None:
                self.log.save(tmp)
            if extra is not None:
                extra(tmp)
            # The manifest goes last: a directory with a manifest is complete.
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

        replace_directory(directory, write_files)
        if progress:
            progress("written", 4, 4)


def _reindex(matrix: sp.csr_matrix, mapping: np.ndarray, size: int) -> sp.csr_matrix:
    """Move rows and columns of a square matrix to new positions in a larger vocabulary."""
    import scipy.sparse as sp

    coo = matrix.tocoo()
    return sp.csr_matrix((coo.data, (mapping[coo.row], mapping[coo.col])), shape=(size, size))


def _align(weighted: sp.csr_matrix, pattern: sp.csr_matrix) -> sp.csr_matrix:
    """The weighted gram on exactly the pattern of the count matrix (zero where a weight summed to zero)."""
    import scipy.sparse as sp

    weighted = weighted.tocsr()
    weighted.sort_indices()
    if np.array_equal(weighted.indptr, pattern.indptr) and np.array_equal(weighted.indices, pattern.indices):
        # The usual case: every event weight is positive, so both grams have the same entries.
        return sp.csr_matrix((weighted.data.astype(np.float64), pattern.indices, pattern.indptr), shape=pattern.shape)
    size = np.int64(pattern.shape[1])
    want = np.repeat(np.arange(pattern.shape[0], dtype=np.int64), np.diff(pattern.indptr)) * size + pattern.indices
    have = np.repeat(np.arange(weighted.shape[0], dtype=np.int64), np.diff(weighted.indptr)) * size + weighted.indices
    position = np.minimum(np.searchsorted(have, want), max(have.size - 1, 0))
    values = np.zeros(want.shape[0], dtype=np.float64)
    if have.size:
        found = have[position] == want
        values[found] = weighted.data[position[found]]
    return sp.csr_matrix((values, pattern.indices.copy(), pattern.indptr.copy()), shape=pattern.shape)
