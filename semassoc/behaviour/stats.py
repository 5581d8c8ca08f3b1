"""Pair statistics of products bought (or viewed) together, persisted for cheap per-product look-ups.

Pair counts come from :mod:`semassoc.behaviour.cooccurrence` (``C = X^T X``), and the weightings (support,
confidence, lift, NPMI, cosine, Jaccard) from :mod:`semassoc.behaviour.weightings`; this module persists them and
answers per-product queries: one neighbour builder ranks each product's row with the weightings.

On disk (one directory, written atomically: a temporary sibling directory renamed into place):

- ``manifest.json``: schema version, counts, build options, sources (path + sha256), last update time;
- ``item_ids.npy`` (sorted, fixed-width unicode) and ``item_counts.npy``: binary search finds a product;
- ``pairs_indptr.npy``, ``pairs_indices.npy``, ``pairs_counts.npy``: every pair count as a symmetric CSR matrix
  (``pairs_wdot.npy`` and ``item_wnorm2.npy`` when weighted). Queries open them with ``np.load(mmap_mode="r")`` and
  read one row; ``update`` reads them whole, adds the new counts and writes them back, which is what makes an update
  exact. Keeping one copy serves both, instead of a top-k copy plus a pair-count npz;
- ``nbr_*.npy``: only with ``top_k``, a truncated copy of the rows for very large catalogues (union of the top ``top_k``
  neighbours by every metric); queries then read these;
- ``log_*.npy``: the timestamped basket log (:mod:`semassoc.behaviour.baskets`), written by the same atomic write.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

import numpy as np

from semassoc.behaviour.baskets import BasketLog
from semassoc.behaviour.pair_state import SCHEMA_VERSION, PairFiles, PairState, Progress
from semassoc.behaviour.weightings import METRICS
from semassoc.errors import InvalidInput, NotFound, SemassocError, StoreDamaged

if TYPE_CHECKING:  # scipy and the events reader (pyarrow) load only where statistics are built, not for queries
    from semassoc.behaviour.events import Events

__all__ = ["BehaviourInfo", "BehaviourStats", "Neighbour"]

#: The repair named in every error about a damaged behaviour file.
REPAIR = "repair: rebuild with `semassoc behavior build EVENTS...` (all the events files counted so far)"

# ------------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Neighbour:
    """One product seen with the query product, with every pair statistic.

    ``confidence`` is P(neighbour | query), ``reverse_confidence`` P(query | neighbour). ``cosine`` uses the event
    weights when the statistics were built with ``weighted=True``; every other value counts baskets.
    """

    item: str
    count: int
    support: float
    confidence: float
    reverse_confidence: float
    lift: float
    npmi: float
    cosine: float
    jaccard: float


@dataclass(frozen=True)
class BehaviourInfo:
    """Summary of stored statistics.

    Attributes:
        baskets: baskets counted (with at least one product).
        items: distinct products.
        pairs: distinct unordered product pairs seen together at least once.
        neighbour_pairs: ordered (product, neighbour) entries kept for queries.
        min_count / top_k: what the neighbour lists keep (``top_k`` None: everything above ``min_count``).
        weighted: whether cosine uses event weights.
        event_types: event types counted (None: all).
        created / last_update: UTC times of the first build and of the latest build or update.
        sources: files counted, in order, with their sha256.
    """

    baskets: int
    items: int
    pairs: int
    neighbour_pairs: int
    min_count: int
    top_k: int | None
    weighted: bool
    event_types: tuple[str, ...] | None
    created: datetime
    last_update: datetime
    sources: tuple[tuple[str, str], ...]


class Counted(Protocol):
    """A load of events as the statistics' manifest records it (local ``Events`` or Spark's ``SparkEvents``)."""

    @property
    def sources(self) -> tuple[str, ...]: ...

    @property
    def digests(self) -> tuple[str, ...]: ...


class BuildOptions(TypedDict, total=False):
    """The keyword options of :meth:`BehaviourStats.build`, for functions that pass them on (the Spark engine)."""

    min_count: int
    top_k: int | None
    weighted: bool
    event_types: Sequence[str] | None
    progress: Progress | None
    extra: Callable[[Path], None] | None


#: Counts the pairs of some loads: ``count(loads, weighted, event_types, progress)``.
PairCounter = Callable[[Sequence[Any], bool, Sequence[str] | None, Progress | None], PairState]
#: The same for a build, which may also take the counts already streamed into files (the Spark engine).
BuildCounter = Callable[[Sequence[Any], bool, Sequence[str] | None, Progress | None], "PairState | PairFiles"]


def _parts(events: Any) -> list[Any]:
    """One load or several, as a list (a local ``Events`` or a sequence of loads of either engine)."""
    from semassoc.behaviour.events import Events

    return [events] if isinstance(events, Events) else list(events)


def _count_local(
    parts: Sequence[Events], weighted: bool, event_types: Sequence[str] | None, progress: Progress | None
) -> PairState:
    from semassoc.behaviour.events import Events

    return PairState.from_events(Events.concat(parts), weighted, event_types, progress)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class BehaviourStats:
    """Pair statistics stored in a directory; build, update incrementally, and query one product cheaply.

    Example:
        >>> from semassoc.behaviour.events import events_from_baskets
        >>> import tempfile
        >>> d = tempfile.mkdtemp() + "/behaviour"
        >>> stats = BehaviourStats.build(events_from_baskets([["a", "b"], ["a", "b"], ["a", "c"]]), d, min_count=1)
        >>> [(n.item, n.count) for n in stats.neighbours("a", metric="count")]
        [('b', 2), ('c', 1)]
    """

    def __init__(self, directory: str | Path) -> None:
        """Open stored statistics (same as ``BehaviourStats.open``)."""
        self.directory = Path(directory)
        manifest_path = self.directory / "manifest.json"
        if not manifest_path.is_file():
            raise NotFound(f"{self.directory}: no behaviour statistics here (run a build first)")
        try:
            self._manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreDamaged(f"{manifest_path}: damaged behaviour manifest ({exc}); {REPAIR}") from None
        if not isinstance(self._manifest, dict):
            raise StoreDamaged(f"{manifest_path}: damaged behaviour manifest (not an object); {REPAIR}")
        if self._manifest.get("schema_version") != SCHEMA_VERSION:
            raise SemassocError(
                f"{self.directory}: behaviour statistics schema {self._manifest.get('schema_version')} "
                f"is not the supported {SCHEMA_VERSION}; rebuild them"
            )
        load = self._load
        self._item_ids = load("item_ids.npy")
        self._item_counts = load("item_counts.npy")
        prefix = "pairs" if self._manifest["top_k"] is None else "nbr"
        self._indptr = load(f"{prefix}_indptr.npy")
        self._indices = load(f"{prefix}_indices.npy")
        self._counts = load(f"{prefix}_counts.npy")
        self._weighted = bool(self._manifest["weighted"])
        self._info: BehaviourInfo | None = None
        self._wdot = load(f"{prefix}_wdot.npy") if self._weighted else None
        self._wnorm2 = load("item_wnorm2.npy") if self._weighted else None

    def _load(self, name: str) -> np.ndarray:
        try:
            return np.load(self.directory / name, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            detail = " ".join(str(exc).split())[:200]
            raise StoreDamaged(f"{self.directory / name}: damaged behaviour file ({detail}); {REPAIR}") from None

    # ------------------------------------------------------------------------------------------------ building

    @classmethod
    def open(cls, directory: str | Path) -> BehaviourStats:
        """Open statistics written by ``build``; reads only the manifest and memory-maps the arrays.

        Raises:
            NotFound: nothing was built there.
        """
        return cls(directory)

    @classmethod
    def build(
        cls,
        events: Events | Sequence[Counted],
        directory: str | Path,
        *,
        min_count: int = 2,
        top_k: int | None = None,
        weighted: bool = False,
        event_types: Sequence[str] | None = None,
        progress: Progress | None = None,
        extra: Callable[[Path], None] | None = None,
        count: BuildCounter | None = None,
    ) -> BehaviourStats:
        """Count every product pair and write the statistics, replacing whatever was in ``directory``.

        Args:
            events: loaded events (several loads are joined with ``Events.concat``).
            directory: where to write (e.g. ``<workspace>/behaviour``); written atomically.
            min_count: default ``min_count`` of queries: pairs seen together in fewer baskets are ignored (pairs
                seen once are mostly noise). Every pair count is stored regardless.
            top_k: ``None`` (default): queries read the full pair rows, exact for any ``k`` and ``min_count``. An
                integer also writes truncated lists (per product, the neighbours with count >= ``min_count`` in the
                top ``top_k`` by any metric, ties kept) and queries read those: exact for ``k <= top_k`` and the
                build's ``min_count``; with a larger query ``min_count`` a list may come out shorter than ``k``.
            weighted: cosine uses event weights (view < cart < purchase, time decay) instead of presence.
            event_types: count only these event types (e.g. ``["purchase"]`` for complements); ``None``: all.
            progress: called as ``progress(stage, step, steps)``.
            extra: writes more files (user histories, options) into the directory being written, so that they
                change together with the statistics or not at all.
            count: counts the pairs of the loads (default: in this process; the Spark engine passes its own, so
                that everything else, the checks and the files written, is this method's). It returns the counts
                in memory (``PairState``) or already written in pieces into the files (``PairFiles``).

        Returns:
            The opened statistics.

        Raises:
            InvalidInput: bad option values or events already counted twice in the input.

        Example:
            >>> # stats = BehaviourStats.build(load_events("orders.parquet"), ".semassoc/behaviour")
        """
        if not isinstance(min_count, int) or min_count < 1:
            raise InvalidInput(f"min_count must be an integer >= 1, not {min_count!r}")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise InvalidInput(f"top_k must be an integer >= 1 or None, not {top_k!r}")
        parts = _parts(events)
        _check_distinct_sources([], parts)
        now = _utc_now()
        state = (count or _count_local)(parts, weighted, event_types, progress)
        options = {
            "min_count": min_count,
            "top_k": top_k,
            "weighted": weighted,
            "event_types": None if event_types is None else sorted(event_types),
        }
        sources = [[s, d] for p in parts for s, d in zip(p.sources, p.digests, strict=True)]
        state.write(Path(directory), options, sources, created=now, updated=now, progress=progress, extra=extra)
        return cls(directory)

    def update(
        self,
        events: Events | Sequence[Counted],
        *,
        progress: Progress | None = None,
        extra: Callable[[Path], None] | None = None,
        count: PairCounter | None = None,
    ) -> BehaviourStats:
        """Add new events (e.g. a new month's file) and rewrite the statistics atomically.

        The result equals a full build on all the files together as long as no basket spans the old and the new
        files: a basket id present in both, or a session cut by time that straddles the file boundary, is counted
        as two baskets here and as one by a full build.

        Args:
            events: the new events, loaded with the same options as before.
            progress: called as ``progress(stage, step, steps)``.
            extra: as in :meth:`build`: more files written in the same atomic directory write.
            count: as in :meth:`build`.

        Returns:
            The reopened, updated statistics (this object keeps reading the old files).

        Raises:
            InvalidInput: a source file was already counted (same sha256).
        """
        parts = _parts(events)
        known = [digest for _, digest in self._manifest["sources"]]
        _check_distinct_sources(known, parts)
        options = {k: self._manifest[k] for k in ("min_count", "top_k", "weighted", "event_types")}
        old = PairState.load(self.directory, self._weighted)
        merged = old.merge((count or _count_local)(parts, self._weighted, options["event_types"], progress))
        sources = [
            *self._manifest["sources"],
            *([s, d] for p in parts for s, d in zip(p.sources, p.digests, strict=True)),
        ]
        created = datetime.fromisoformat(self._manifest["created"])
        merged.write(
            self.directory, options, sources, created=created, updated=_utc_now(), progress=progress, extra=extra
        )
        return type(self)(self.directory)

    # ------------------------------------------------------------------------------------------------- queries

    def _index(self, item_id: str) -> int:
        ids = self._item_ids
        key = np.array(item_id, dtype=ids.dtype)
        position = int(np.searchsorted(ids, key))
        if position >= ids.shape[0] or ids[position] != item_id or len(item_id) > ids.dtype.itemsize // 4:
            raise NotFound(f"product {item_id!r} has no behaviour statistics (not in any counted basket)")
        return position

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, str):
            return False
        try:
            self._index(item_id)
        except NotFound:
            return False
        return True

    def item_count(self, item_id: str) -> int:
        """Number of baskets holding ``item_id``.

        Raises:
            NotFound: the product is in no counted basket.
        """
        return int(self._item_counts[self._index(item_id)])

    def item_ids_and_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """All product ids (sorted) and their basket counts, as arrays (reads two columns, not the pairs)."""
        return np.asarray(self._item_ids), np.asarray(self._item_counts, dtype=np.int64)

    def neighbour_codes(self, item_id: str, min_count: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One product's row as arrays, for vectorised scoring: (neighbour codes, pair counts, neighbour basket
        counts), pairs with fewer than ``min_count`` shared baskets left out; empty for an unknown product.
        Codes index :meth:`names_of`; pair with ``item_count(item_id)`` and ``info().baskets`` for any weighting.
        """
        if item_id not in self:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        row = self._index(item_id)
        start, end = int(self._indptr[row]), int(self._indptr[row + 1])
        cols = np.asarray(self._indices[start:end], dtype=np.int64)
        pair = np.asarray(self._counts[start:end], dtype=np.int64)
        keep = pair >= (int(self._manifest["min_count"]) if min_count is None else min_count)
        cols, pair = cols[keep], pair[keep]
        return cols, pair, np.asarray(self._item_counts[cols], dtype=np.int64)

    def names_of(self, codes: np.ndarray) -> list[str]:
        """Product ids of item codes."""
        return [str(x) for x in np.asarray(self._item_ids[np.asarray(codes, dtype=np.int64)]).tolist()]

    def codes_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """Item codes of known products (unknown ones are left out)."""
        return np.array([self._index(i) for i in item_ids if i in self], dtype=np.int64)

    def counts_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """Basket counts of many products at once (0 for products in no basket)."""
        if not item_ids:
            return np.zeros(0, np.int64)
        ids = self._item_ids
        wanted = np.asarray(list(item_ids), dtype=ids.dtype)
        position = np.minimum(np.searchsorted(ids, wanted), ids.shape[0] - 1)
        found = np.asarray(ids[position]) == np.asarray(list(item_ids), dtype=object).astype(str)
        return np.where(found, np.asarray(self._item_counts[position], dtype=np.int64), 0)

    def neighbours(
        self, item_id: str, k: int = 10, metric: str = "lift", min_count: int | None = None
    ) -> list[Neighbour]:
        """Products seen in the same baskets as ``item_id``, best first by ``metric``.

        Reads one row of the memory-mapped neighbour lists and the counts of its products, nothing else.

        Args:
            item_id: the query product.
            k: how many to return.
            metric: one of ``METRICS`` (count, support, confidence, reverse_confidence, lift, npmi, cosine, jaccard).
            min_count: ignore pairs seen together in fewer baskets (default: the build's ``min_count``; lower
                values are refused when the build truncated lists with ``top_k``).

        Returns:
            Up to ``k`` ``Neighbour`` rows; ties are broken by count, then product id.

        Raises:
            NotFound: unknown product. InvalidInput: unknown metric, bad k or min_count.

        Example:
            >>> # [(n.item, n.count, round(n.lift, 2)) for n in stats.neighbours("22386", k=3)]
        """
        if metric not in METRICS:
            raise InvalidInput(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
        if not isinstance(k, int) or k < 1:
            raise InvalidInput(f"k must be an integer >= 1, not {k!r}")
        built_min = int(self._manifest["min_count"])
        if min_count is None:
            min_count = built_min
        if not isinstance(min_count, int) or min_count < 1:
            raise InvalidInput(f"min_count must be an integer >= 1, not {min_count!r}")
        if min_count < built_min and self._manifest["top_k"] is not None:
            raise InvalidInput(
                f"min_count {min_count} is below the {built_min} these truncated lists were built with; rebuild "
                f"with a lower min_count (or without top_k) to see rarer pairs"
            )
        row = self._index(item_id)
        start, end = int(self._indptr[row]), int(self._indptr[row + 1])
        cols = np.asarray(self._indices[start:end], dtype=np.int64)
        pair = np.asarray(self._counts[start:end], dtype=np.int64)
        keep = pair >= min_count
        cols, pair = cols[keep], pair[keep]
        if cols.size == 0:
            return []
        n = int(self._manifest["baskets"])
        left = np.full(cols.shape[0], int(self._item_counts[row]), dtype=np.int64)
        right = np.asarray(self._item_counts[cols], dtype=np.int64)
        values = {name: fn(pair, left, right, n) for name, fn in METRICS.items()}
        if self._wdot is not None and self._wnorm2 is not None:
            wdot = np.asarray(self._wdot[start:end])[keep]
            values["cosine"] = wdot / np.sqrt(float(self._wnorm2[row]) * np.asarray(self._wnorm2[cols]))
        names = self._item_ids[cols].astype(object)
        order = np.lexsort((names, -pair, -values[metric]))[:k]
        return [
            Neighbour(
                item=str(names[i]),
                count=int(pair[i]),
                support=float(values["support"][i]),
                confidence=float(values["confidence"][i]),
                reverse_confidence=float(values["reverse_confidence"][i]),
                lift=float(values["lift"][i]),
                npmi=float(values["npmi"][i]),
                cosine=float(values["cosine"][i]),
                jaccard=float(values["jaccard"][i]),
            )
            for i in order.tolist()
        ]

    def basket_log(self) -> BasketLog | None:
        """The timestamped basket log (None for statistics built before the log was kept: rebuild them)."""
        if not BasketLog.exists(self.directory):
            return None
        return BasketLog.load(self.directory, int(self._item_ids.shape[0]))

    def info(self) -> BehaviourInfo:
        """Counts, options, sources and update times, from the manifest alone."""
        if self._info is None:
            self._info = self._read_info()
        return self._info

    def _read_info(self) -> BehaviourInfo:
        m = self._manifest
        return BehaviourInfo(
            baskets=int(m["baskets"]),
            items=int(m["items"]),
            pairs=int(m["pairs"]),
            neighbour_pairs=int(m["neighbour_pairs"]),
            min_count=int(m["min_count"]),
            top_k=m["top_k"],
            weighted=bool(m["weighted"]),
            event_types=None if m["event_types"] is None else tuple(m["event_types"]),
            created=datetime.fromisoformat(m["created"]),
            last_update=datetime.fromisoformat(m["last_update"]),
            sources=tuple((s, d) for s, d in m["sources"]),
        )


def _check_distinct_sources(known: Sequence[str], parts: Sequence[Counted]) -> None:
    seen = set(known)
    for part in parts:
        for source, digest in zip(part.sources, part.digests, strict=True):
            if digest in seen:
                raise InvalidInput(
                    f"{source}: these events (sha256 {digest[:12]}...) are already counted; "
                    f"counting them again would double every pair"
                )
            seen.add(digest)
