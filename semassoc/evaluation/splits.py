"""Temporal splits: events cut at a date, whole baskets on one side by their first event time."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from semassoc.behaviour.events import Events
from semassoc.errors import InvalidInput

# ============================================================================================================ split


@dataclass(frozen=True)
class Split:
    """Events cut at a date into a training side (behaviour is learnt from it) and a judged side.

    Attributes:
        train: events of baskets that started before ``cut``, less the events of ``hidden_items``.
        test: events of baskets that started at or after ``cut`` (all of them).
        cut: the cut time (UTC).
        new_items: products first seen after the cut (cold by construction).
        hidden_items: warm products whose training events were hidden (``cold_share``).
        dropped_baskets: baskets without any known time (in neither side).
    """

    train: Events
    test: Events
    cut: datetime
    new_items: frozenset[str]
    hidden_items: frozenset[str]
    dropped_baskets: int = 0

    @property
    def cold_items(self) -> frozenset[str]:
        """Products with no training events: new after the cut or hidden."""
        return self.new_items | self.hidden_items


def _utc_naive(moment: datetime) -> np.datetime64:
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return np.datetime64(moment, "us")


def temporal_split(
    events: Events,
    *,
    split_date: datetime | None = None,
    split_fraction: float = 0.8,
    cold_share: float = 0.0,
    seed: int = 0,
    eligible: Collection[str] | None = None,
) -> Split:
    """Cut events by time: whole baskets go to one side by their first event time.

    Args:
        events: loaded events with a timestamp column.
        split_date: the cut (naive means UTC); default: ``split_fraction`` of the way through the time range.
        split_fraction: where to cut when there is no ``split_date``, in (0, 1).
        cold_share: share of warm products (in ``eligible``) whose training events are all hidden, drawn with
            ``seed``, so that cold products exist on any data set.
        seed: random seed of the cold share.
        eligible: products that may be hidden (e.g. the catalog); default: every product of the training side.

    Raises:
        InvalidInput: no timestamps, a bad fraction or share, or a cut leaving one side empty.
    """
    if events.timestamp is None:
        raise InvalidInput(
            "a temporal split needs event times, and these events have no timestamp column "
            "(name it with --timestamp-column)"
        )
    if not 0.0 < split_fraction < 1.0:
        raise InvalidInput(f"--split-fraction must be between 0 and 1 (exclusive), not {split_fraction}")
    if not 0.0 <= cold_share < 1.0:
        raise InvalidInput(f"--cold-share must be in [0, 1), not {cold_share}")
    ts = events.timestamp.astype("datetime64[us]")
    known = ~np.isnat(ts)
    if not known.any():
        raise InvalidInput("a temporal split needs event times, and every timestamp is missing")
    as_int = ts.astype(np.int64)
    big = np.iinfo(np.int64).max
    basket_start = np.full(events.n_baskets, big, dtype=np.int64)
    np.minimum.at(basket_start, events.basket[known], as_int[known])
    if split_date is None:
        lo, hi = int(as_int[known].min()), int(as_int[known].max())
        cut64 = np.datetime64(lo + round(split_fraction * (hi - lo)), "us")
    else:
        cut64 = _utc_naive(split_date)
    cut_int = int(cut64.astype(np.int64))
    row_start = basket_start[events.basket]
    timed = row_start != big
    train_rows = timed & (row_start < cut_int)
    test_rows = timed & (row_start >= cut_int)
    cut = datetime(1970, 1, 1, tzinfo=timezone.utc) + (cut64 - np.datetime64(0, "us")).item()
    if not train_rows.any() or not test_rows.any():
        side = "before" if not train_rows.any() else "at or after"
        raise InvalidInput(f"the cut {cut.isoformat()} leaves no events {side} it; choose another split date")
    train = events.select(train_rows)
    test = events.select(test_rows)
    warm = set(train.item_ids.tolist())
    new_items = frozenset(test.item_ids.tolist()) - warm
    hidden: frozenset[str] = frozenset()
    if cold_share > 0:
        candidates = sorted(warm if eligible is None else warm & set(eligible))
        n_hidden = round(cold_share * len(candidates))
        if n_hidden:
            rng = np.random.default_rng(seed)
            picked = rng.choice(len(candidates), size=n_hidden, replace=False)
            hidden = frozenset(candidates[i] for i in picked.tolist())
            hidden_codes = np.isin(train.item_ids, np.array(sorted(hidden), dtype=object))
            train = train.select(~hidden_codes[train.item])
    dropped = int((basket_start == big).sum())
    return Split(train=train, test=test, cut=cut, new_items=new_items, hidden_items=hidden, dropped_baskets=dropped)
