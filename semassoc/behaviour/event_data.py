"""Validated behaviour events as column arrays (``Events``), and events built from in-memory baskets.

Reading and validating events files is :mod:`semassoc.behaviour.events`; how to read them (columns, filters,
weights) is :mod:`semassoc.behaviour.event_options`.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import numpy as np

from semassoc.errors import InvalidInput, RowProblem

if TYPE_CHECKING:
    import pyarrow as pa

#: The ratio 1 : 3 : 5 is a common starting point in implicit-feedback work; change it with ``weights=``.
DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = {"view": 1.0, "cart": 3.0, "purchase": 5.0}
#: Event type assumed when the file has no event-type column (transaction logs such as invoices).
DEFAULT_EVENT_TYPE = "purchase"
#: Weight of an event type missing from the weights mapping (a custom type).
CUSTOM_EVENT_WEIGHT = 1.0

#: Problems kept per load (the count of all of them is kept too).
_MAX_PROBLEMS = 20


@dataclass(frozen=True)
class SkipSummary:
    """What ``on_error="skip"`` left out.

    Attributes:
        rows: number of rows skipped.
        reasons: count of skipped rows per ``"field: reason"`` (a row with two problems counts under both).
        problems: the first problems, in file order.
    """

    rows: int = 0
    reasons: Mapping[str, int] = field(default_factory=dict)
    problems: tuple[RowProblem, ...] = ()


@dataclass(frozen=True, eq=False)
class Events:
    """Validated events as column arrays (dictionary-encoded), ready for basket statistics.

    Product, basket, user and event-type columns are integer codes into sorted vocabularies, so
    ``events.item_ids[events.item]`` gives the product id of every row.

    Attributes:
        item_ids: sorted unique product ids (object array of str).
        item: product code per row (int32).
        basket_ids: unique basket keys (object array of str); a cut session is keyed ``"<user>@<start time>"``.
        basket: basket code per row (int64).
        weight: weight per row: event-type weight times time decay (float64).
        event_types: event-type vocabulary; ``event_type`` holds a code per row (int16).
        user_ids / user: user vocabulary and code per row (-1 where unknown); ``None`` without a user column.
        timestamp: event time per row as ``datetime64[us]`` UTC (NaT where unknown); ``None`` without a time column.
        quantity: quantity per row (float64); ``None`` without a quantity column.
        sources: the files read; ``digests`` their sha256.
        rows_read: data rows read from the files; ``skipped`` and ``filtered`` say where the others went.
    """

    item_ids: np.ndarray
    item: np.ndarray
    basket_ids: np.ndarray
    basket: np.ndarray
    weight: np.ndarray
    event_types: np.ndarray
    event_type: np.ndarray
    user_ids: np.ndarray | None = None
    user: np.ndarray | None = None
    timestamp: np.ndarray | None = None
    quantity: np.ndarray | None = None
    sources: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()
    rows_read: int = 0
    skipped: SkipSummary = field(default_factory=SkipSummary)
    filtered: Mapping[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.item.shape[0])

    @property
    def n_items(self) -> int:
        """Number of distinct products."""
        return int(self.item_ids.shape[0])

    @property
    def n_baskets(self) -> int:
        """Number of baskets (orders or sessions)."""
        return int(self.basket_ids.shape[0])

    @property
    def time_range(self) -> tuple[datetime, datetime] | None:
        """Earliest and latest known event time (UTC), or ``None``."""
        if self.timestamp is None:
            return None
        known = self.timestamp[~np.isnat(self.timestamp)]
        if known.size == 0:
            return None
        return tuple(_to_datetime(v) for v in (known.min(), known.max()))  # type: ignore[return-value]

    def baskets(self) -> list[list[str]]:
        """The distinct products of each basket, in basket-code order (products sorted).

        Example:
            >>> # events.baskets()[0] -> ['21232', '84879']
        """
        order = np.lexsort((self.item, self.basket))
        b = self.basket[order]
        i = self.item[order]
        keep = np.ones(b.shape[0], dtype=bool)
        keep[1:] = (b[1:] != b[:-1]) | (i[1:] != i[:-1])
        b, i = b[keep], i[keep]
        names = self.item_ids[i].tolist()
        bounds = np.flatnonzero(np.diff(b)) + 1
        starts = [0, *bounds.tolist()]
        ends = [*bounds.tolist(), len(names)]
        return [names[s:e] for s, e in zip(starts, ends, strict=True)]

    def select(self, mask: np.ndarray) -> Events:
        """The rows where ``mask`` is true (e.g. events before a date), with vocabularies narrowed to what is used.

        Product, basket and user vocabularies keep only the ids of the selected rows (still sorted), so a product
        absent from the selection is absent from ``item_ids``. ``sources``, ``digests``, ``rows_read``, ``skipped``
        and ``filtered`` still describe the original load.

        Raises:
            InvalidInput: ``mask`` is not a boolean array with one entry per row.
        """
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (len(self),):
            raise InvalidInput(f"select needs a boolean mask of {len(self)} rows, not {mask.dtype} {mask.shape}")

        def narrow(vocab: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            kept = codes[mask]
            used = np.unique(kept[kept >= 0])
            remap = np.full(vocab.shape[0], -1, dtype=np.int64)
            remap[used] = np.arange(used.shape[0])
            out = np.where(kept >= 0, remap[np.maximum(kept, 0)], -1)
            return vocab[used], out.astype(codes.dtype)

        item_ids, item = narrow(self.item_ids, self.item)
        basket_ids, basket = narrow(self.basket_ids, self.basket)
        user_ids = user = None
        if self.user is not None and self.user_ids is not None:
            user_ids, user = narrow(self.user_ids, self.user)
        return replace(
            self,
            item_ids=item_ids,
            item=item,
            basket_ids=basket_ids,
            basket=basket,
            weight=self.weight[mask],
            event_type=self.event_type[mask],
            user_ids=user_ids,
            user=user,
            timestamp=None if self.timestamp is None else self.timestamp[mask],
            quantity=None if self.quantity is None else self.quantity[mask],
        )

    @classmethod
    def concat(cls, parts: Sequence[Events]) -> Events:
        """Join several loads into one (as if read from one file); rows with the same basket key merge.

        Args:
            parts: loaded events, e.g. one per file.

        Returns:
            One ``Events`` with merged vocabularies; skip and filter summaries are added up.
        """
        if not parts:
            raise InvalidInput("no events to concatenate")
        if len(parts) == 1:
            return parts[0]
        item_ids, item = _merge_codes([p.item_ids for p in parts], [p.item for p in parts])
        basket_ids, basket = _merge_codes([p.basket_ids for p in parts], [p.basket for p in parts])
        event_types, event_type = _merge_codes([p.event_types for p in parts], [p.event_type for p in parts])
        user_ids = user = timestamp = quantity = None
        if all(p.user is not None for p in parts):
            user_ids, user = _merge_codes(
                [p.user_ids for p in parts if p.user_ids is not None], [p.user for p in parts if p.user is not None]
            )
        if all(p.timestamp is not None for p in parts):
            timestamp = np.concatenate([p.timestamp for p in parts if p.timestamp is not None])
        if all(p.quantity is not None for p in parts):
            quantity = np.concatenate([p.quantity for p in parts if p.quantity is not None])
        reasons: Counter[str] = Counter()
        filtered: Counter[str] = Counter()
        problems: list[RowProblem] = []
        for p in parts:
            reasons.update(p.skipped.reasons)
            filtered.update(p.filtered)
            problems.extend(p.skipped.problems)
        return cls(
            item_ids=item_ids,
            item=item.astype(np.int32),
            basket_ids=basket_ids,
            basket=basket.astype(np.int64),
            weight=np.concatenate([p.weight for p in parts]),
            event_types=event_types,
            event_type=event_type.astype(np.int16),
            user_ids=user_ids,
            user=None if user is None else user.astype(np.int32),
            timestamp=timestamp,
            quantity=quantity,
            sources=tuple(s for p in parts for s in p.sources),
            digests=tuple(d for p in parts for d in p.digests),
            rows_read=sum(p.rows_read for p in parts),
            skipped=SkipSummary(
                rows=sum(p.skipped.rows for p in parts), reasons=dict(reasons), problems=tuple(problems[:_MAX_PROBLEMS])
            ),
            filtered=dict(filtered),
        )


def _merge_codes(vocabs: Sequence[np.ndarray], codes: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Union of sorted vocabularies, and every part's codes remapped into it (-1 stays -1)."""
    union = np.unique(np.concatenate(vocabs)) if vocabs else np.array([], dtype=object)
    out = []
    for vocab, code in zip(vocabs, codes, strict=True):
        mapping = np.searchsorted(union, vocab).astype(np.int64) if vocab.size else np.zeros(0, dtype=np.int64)
        remapped = np.full(code.shape[0], -1, dtype=np.int64)
        known = code >= 0
        remapped[known] = mapping[code[known]]
        out.append(remapped)
    return union, np.concatenate(out)


def _to_datetime(value: np.datetime64) -> datetime:
    micros = int(value.astype("datetime64[us]").astype(np.int64))
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micros)


def _encode(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted vocabulary (object array) and int64 codes (-1 for null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
    vocab = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object)
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.argsort(vocab, kind="stable")
    rank = np.empty(order.shape[0], dtype=np.int64)
    rank[order] = np.arange(order.shape[0])
    known = codes >= 0
    codes[known] = rank[codes[known]]
    return vocab[order], codes


def events_from_baskets(baskets: Sequence[Sequence[str]], source: str = "<memory>") -> Events:
    """Events from in-memory baskets (one purchase per product and basket); handy for tests and rules.

    Args:
        baskets: each basket a sequence of product ids; basket keys are their positions ("0", "1", ...).
        source: name recorded as the source.

    Returns:
        ``Events`` with weight 5 (purchase) on every row.

    Example:
        >>> events_from_baskets([["a", "b"], ["a"]]).n_items
        2
    """
    import pyarrow as pa

    sizes = np.fromiter((len(b) for b in baskets), dtype=np.int64, count=len(baskets))
    flat = [str(i) for b in baskets for i in b]
    for position, b in enumerate(baskets):
        for value in b:
            if not str(value).strip():
                raise InvalidInput(f"{source}: basket {position + 1}: empty product id")
    item_ids, item = _encode(pa.chunked_array([pa.array(flat, pa.string())]))
    keys = np.array([str(i) for i in range(len(baskets))], dtype=object)
    order = np.argsort(keys, kind="stable")
    rank = np.empty(order.shape[0], dtype=np.int64)
    rank[order] = np.arange(order.shape[0])
    basket = np.repeat(rank, sizes)
    return Events(
        item_ids=item_ids,
        item=item.astype(np.int32),
        basket_ids=keys[order],
        basket=basket,
        weight=np.full(item.shape[0], DEFAULT_EVENT_WEIGHTS["purchase"]),
        event_types=np.array([DEFAULT_EVENT_TYPE], dtype=object),
        event_type=np.zeros(item.shape[0], np.int16),
        sources=(source,),
        digests=(hashlib.sha256(json.dumps([list(map(str, b)) for b in baskets]).encode()).hexdigest(),),
        rows_read=int(sizes.sum()),
    )
