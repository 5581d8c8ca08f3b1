"""The exact pair statistics as arrays (every pair count, product counts, basket count, weighted grams, basket log)
and their files: computed from events, loaded, merged (``behavior update`` is a merge, equal to a rebuild) and
written atomically. :class:`semassoc.behaviour.stats.BehaviourStats` opens and queries what this writes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from semassoc.behaviour.baskets import FILES as LOG_FILES
from semassoc.behaviour.baskets import BasketLog
from semassoc.behaviour.cooccurrence import basket_item_matrix, pair_counts
from semassoc.behaviour.npy_stream import BLOCK, NpyReader, NpyWriter, row_blocks, save_blocks
from semassoc.behaviour.weightings import METRICS, RANKED_METRICS
from semassoc.io import replace_directory

if TYPE_CHECKING:  # scipy and the events reader (pyarrow) load only where statistics are built
    import scipy.sparse as sp

    from semassoc.behaviour.events import Events

SCHEMA_VERSION = 1
#: progress(stage, step, steps)
Progress = Callable[[str, int, int], None]


def _neighbour_block(
    first_row: int,
    indptr: np.ndarray,
    cols: np.ndarray,
    pair: np.ndarray,
    wdot: np.ndarray | None,
    counts: np.ndarray,
    n_baskets: int,
    min_count: int,
    top_k: int | None,
    wnorm2: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The neighbour lists of the rows ``first_row...`` whose entries are ``cols``/``pair``/``wdot`` (``indptr`` from
    0): per row, the neighbours with count >= min_count; with ``top_k``, only those ranking in the top ``top_k`` by
    some metric (ties at the cut are all kept, so a query for ``k <= top_k`` is exact). Returns the kept length of
    each row and the kept entries."""
    keep = pair >= min_count
    kept_before = np.r_[0, np.cumsum(keep)]
    indptr = kept_before[indptr]
    cols, pair = cols[keep], pair[keep]
    if wdot is not None:
        wdot = wdot[keep]
    lengths = np.diff(indptr)
    if top_k is not None and (lengths > top_k).any():
        selected = np.ones(cols.shape[0], dtype=bool)
        for local in np.flatnonzero(lengths > top_k).tolist():
            row = first_row + local
            start, stop = int(indptr[local]), int(indptr[local + 1])
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
        indptr = kept_before[indptr]
        cols, pair = cols[selected], pair[selected]
        if wdot is not None:
            wdot = wdot[selected]
    return np.diff(indptr), cols, pair, wdot


#: Reads the entries ``start:stop`` of the pair matrix: (columns, counts, weighted dot products or None).
EntryReader = Callable[[int, int], tuple[np.ndarray, np.ndarray, "np.ndarray | None"]]


def _write_neighbour_lists(
    tmp: Path,
    indptr: np.ndarray,
    read: EntryReader,
    counts: np.ndarray,
    n_baskets: int,
    min_count: int,
    top_k: int | None,
    wnorm2: np.ndarray | None,
    weighted: bool,
) -> int:
    """Write ``nbr_*.npy`` (see :func:`_neighbour_block`) into ``tmp``, reading the pair rows block by block, so
    that no full-length temporary exists; returns the number of entries kept."""
    size = int(indptr.shape[0]) - 1
    count_dtype = _narrow_unsigned(int(counts.max(initial=0)))
    index_dtype = _narrow_unsigned(max(size - 1, 0))
    lengths = np.zeros(size, dtype=np.int64)
    with ExitStack() as files:
        indices_out = files.enter_context(NpyWriter(tmp / "nbr_indices.npy", index_dtype))
        counts_out = files.enter_context(NpyWriter(tmp / "nbr_counts.npy", count_dtype))
        wdot_out = files.enter_context(NpyWriter(tmp / "nbr_wdot.npy", np.float64)) if weighted else None
        for first, stop in row_blocks(indptr, BLOCK):
            start, end = int(indptr[first]), int(indptr[stop])
            cols, pair, wdot = read(start, end)
            kept, cols, pair, wdot = _neighbour_block(
                first,
                indptr[first : stop + 1] - start,
                cols.astype(np.int64, copy=False),
                pair.astype(np.int64, copy=False),
                wdot,
                counts,
                n_baskets,
                min_count,
                top_k,
                wnorm2,
            )
            lengths[first:stop] = kept
            indices_out.write(cols)
            counts_out.write(pair)
            if wdot_out is not None and wdot is not None:
                wdot_out.write(wdot)
    np.save(tmp / "nbr_indptr.npy", np.r_[0, np.cumsum(lengths)].astype(np.int64))
    return int(lengths.sum())


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
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        item_ids = np.load(directory / "item_ids.npy").astype(object)
        wnorm2 = np.load(directory / "item_wnorm2.npy") if weighted else None
        return cls._from_files(
            directory, item_ids, np.load(directory / "item_counts.npy"), int(manifest["baskets"]), wnorm2
        )

    @classmethod
    def _from_files(
        cls, directory: Path, item_ids: np.ndarray, item_counts: np.ndarray, baskets: int, wnorm2: np.ndarray | None
    ) -> PairState:
        """The state whose pair and log files are in ``directory`` (the per-product arrays given)."""
        import scipy.sparse as sp

        size = item_ids.shape[0]
        indptr = np.load(directory / "pairs_indptr.npy")
        # Back from the narrow on-disk types: scipy wants int32/int64 indices, and sums must not overflow.
        indices = np.load(directory / "pairs_indices.npy").astype(np.int32)
        counts = np.load(directory / "pairs_counts.npy").astype(np.int64)
        pairs = sp.csr_matrix((counts, indices, indptr), shape=(size, size))
        weighted_pairs = None
        if wnorm2 is not None:
            wdot = np.load(directory / "pairs_wdot.npy")
            weighted_pairs = sp.csr_matrix((wdot, indices, indptr), shape=(size, size))
        log = BasketLog.load(directory, size) if BasketLog.exists(directory) else None
        return cls(item_ids, item_counts, pairs, baskets, weighted_pairs, wnorm2, log)

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
        count_dtype = _narrow_unsigned(int(self.item_counts.max(initial=0)))
        index_dtype = _narrow_unsigned(max(self.item_ids.shape[0] - 1, 0))
        pairs = self.pairs
        wdot = None if self.weighted_pairs is None else self.weighted_pairs.data

        def read(start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
            return pairs.indices[start:stop], pairs.data[start:stop], None if wdot is None else wdot[start:stop]

        def save(tmp: Path) -> None:
            np.save(tmp / "pairs_indptr.npy", pairs.indptr.astype(np.int64))
            save_blocks(tmp / "pairs_indices.npy", pairs.indices, index_dtype)
            save_blocks(tmp / "pairs_counts.npy", pairs.data, count_dtype)
            if wdot is not None:
                save_blocks(tmp / "pairs_wdot.npy", wdot, np.float64)
            if self.log is not None:
                self.log.save(tmp)

        _write_statistics(
            directory,
            _Arrays(self.item_ids, self.item_counts, self.baskets, self.wnorm2 if wdot is not None else None),
            pairs.indptr,
            read,
            save,
            options,
            sources,
            created=created,
            updated=updated,
            progress=progress,
            extra=extra,
        )


@dataclass
class _Arrays:
    """What every statistics directory holds besides the pairs and the log."""

    item_ids: np.ndarray
    item_counts: np.ndarray
    baskets: int
    wnorm2: np.ndarray | None  # None: unweighted


def _write_statistics(
    directory: Path,
    arrays: _Arrays,
    indptr: np.ndarray,
    read: EntryReader,
    save: Callable[[Path], None],
    options: Mapping[str, object],
    sources: Sequence[Sequence[str]],
    *,
    created: datetime,
    updated: datetime,
    progress: Progress | None,
    extra: Callable[[Path], None] | None,
) -> None:
    """The directory write shared by the in-memory state and the streamed files: products, the pairs and the log
    (``save(tmp)``), the neighbour lists (read block by block with ``read``), ``extra``, and the manifest last."""
    if progress:
        progress("neighbour lists", 3, 4)
    top_k = options["top_k"]
    nnz = int(indptr[-1])

    def write_files(tmp: Path) -> None:
        neighbour_pairs = nnz
        if top_k is not None:
            neighbour_pairs = _write_neighbour_lists(
                tmp,
                indptr,
                read,
                arrays.item_counts,
                arrays.baskets,
                int(options["min_count"]),  # type: ignore[call-overload]
                int(top_k),  # type: ignore[call-overload]
                arrays.wnorm2,
                arrays.wnorm2 is not None,
            )
        width = max((len(s) for s in arrays.item_ids.tolist()), default=1)
        np.save(tmp / "item_ids.npy", arrays.item_ids.astype(f"<U{width}"))
        np.save(tmp / "item_counts.npy", arrays.item_counts.astype(np.int64))
        if arrays.wnorm2 is not None:
            np.save(tmp / "item_wnorm2.npy", np.asarray(arrays.wnorm2, dtype=np.float64))
        save(tmp)
        if extra is not None:
            extra(tmp)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "baskets": int(arrays.baskets),
            "items": int(arrays.item_ids.shape[0]),
            "pairs": nnz // 2,
            "neighbour_pairs": int(neighbour_pairs),
            **options,
            "created": created.isoformat(),
            "last_update": updated.isoformat(),
            "sources": [list(s) for s in sources],
        }
        # The manifest goes last: a directory with a manifest is complete.
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    replace_directory(directory, write_files)
    if progress:
        progress("written", 4, 4)


#: The pair and log files a streaming counter leaves in its scratch directory.
STREAMED_FILES = ("pairs_indptr.npy", "pairs_indices.npy", "pairs_counts.npy", "pairs_wdot.npy", *LOG_FILES)


@dataclass
class PairFiles:
    """The counts of a build already written as the workspace's pair and log files, by a counter that streams its
    result in pieces (the Spark engine), so that no process ever holds the pair matrix or the log whole.

    ``scratch`` holds ``pairs_indptr.npy``, ``pairs_indices.npy``, ``pairs_counts.npy`` (``pairs_wdot.npy`` when
    weighted) and the ``log_*.npy`` files, with exactly the bytes :meth:`PairState.write` gives; the per-product
    arrays are in memory. :meth:`write` moves the files into the statistics directory and adds what
    :meth:`PairState.write` adds (products, neighbour lists read block by block, manifest); :meth:`state` loads them
    as a :class:`PairState` (for ``behavior update``, which merges in memory).
    """

    scratch: Path
    item_ids: np.ndarray
    item_counts: np.ndarray
    baskets: int
    wnorm2: np.ndarray | None = None
    pieces: int = 0  # pieces the pair list arrived in (for reports)

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
        """As :meth:`PairState.write`; the scratch directory is removed whatever happens."""
        try:
            indptr = np.load(self.scratch / "pairs_indptr.npy")
            indices = NpyReader(self.scratch / "pairs_indices.npy")
            counts = NpyReader(self.scratch / "pairs_counts.npy")
            wdot = NpyReader(self.scratch / "pairs_wdot.npy") if self.wnorm2 is not None else None

            def read(start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
                part = None if wdot is None else wdot.read(start, stop)
                return indices.read(start, stop), counts.read(start, stop), part

            def save(tmp: Path) -> None:
                for name in STREAMED_FILES:
                    if (self.scratch / name).is_file():
                        shutil.move(self.scratch / name, tmp / name)

            arrays = _Arrays(self.item_ids, self.item_counts, self.baskets, self.wnorm2)
            _write_statistics(
                directory,
                arrays,
                indptr,
                read,
                save,
                options,
                sources,
                created=created,
                updated=updated,
                progress=progress,
                extra=extra,
            )
        finally:
            self.discard()

    def state(self) -> PairState:
        """The counts as an in-memory :class:`PairState`; the scratch directory is removed."""
        try:
            return PairState._from_files(self.scratch, self.item_ids, self.item_counts, self.baskets, self.wnorm2)
        finally:
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


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
