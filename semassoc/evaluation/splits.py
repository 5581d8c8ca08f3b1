"""Temporal splits: events cut at a date, whole baskets on one side by their first event time."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from semassoc.behaviour.cooccurrence import basket_item_matrix
from semassoc.behaviour.events import Events
from semassoc.errors import InvalidInput

# ============================================================================================================ split


@dataclass(frozen=True)
class Split:
    """Events cut at a date into a training side (behaviour is learnt from it) and a judged side.

    Attributes:
        train: events of baskets that started before ``cut``, less the events of ``hidden_items``.
        test: events of baskets that started at or after ``cut`` (and before ``end`` when there is one).
        cut: the cut time (UTC).
        new_items: products truly new: first seen after the cut (no event at all before it).
        hidden_items: established products whose training events were hidden (``cold_share``); never new.
        end: the end of the judged side (None: the end of the events).
        dropped_baskets: baskets without any known time (in neither side).
    """

    train: Events
    test: Events
    cut: datetime
    new_items: frozenset[str]
    hidden_items: frozenset[str]
    dropped_baskets: int = 0
    end: datetime | None = None

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
    end: datetime | None = None,
    hide_min_baskets: int = 1,
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
        hide_min_baskets: only products in at least this many training baskets may be hidden (so that hidden
            products are established ones).
        end: judge only baskets that started before this time (the next cut of a rolling origin, or a window);
            default: every basket at or after the cut.

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
        cut64: np.datetime64 = np.datetime64(lo + round(split_fraction * (hi - lo)), "us")
    else:
        cut64 = _utc_naive(split_date)
    cut_int = int(cut64.astype(np.int64))
    row_start = basket_start[events.basket]
    timed = row_start != big
    train_rows = timed & (row_start < cut_int)
    test_rows = timed & (row_start >= cut_int)
    if end is not None:
        end_int = int(_utc_naive(end).astype(np.int64))
        if end_int <= cut_int:
            raise InvalidInput(f"the judged side must end after its cut, not at {end.isoformat()}")
        test_rows &= row_start < end_int
    cut = _aware(cut64)
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
        if hide_min_baskets > 1:
            matrix, _ = basket_item_matrix(train)
            baskets = dict(zip(train.item_ids.tolist(), np.asarray(matrix.sum(axis=0)).ravel().tolist(), strict=True))
            candidates = [p for p in candidates if baskets.get(p, 0) >= hide_min_baskets]
        n_hidden = round(cold_share * len(candidates))
        if n_hidden:
            rng = np.random.default_rng(seed)
            picked = rng.choice(len(candidates), size=n_hidden, replace=False)
            hidden = frozenset(candidates[i] for i in picked.tolist())
            hidden_codes = np.isin(train.item_ids, np.array(sorted(hidden), dtype=object))
            train = train.select(~hidden_codes[train.item])
    dropped = int((basket_start == big).sum())
    return Split(
        train=train,
        test=test,
        cut=cut,
        new_items=new_items,
        hidden_items=hidden,
        dropped_baskets=dropped,
        end=None if end is None else _aware(_utc_naive(end)),
    )


def _aware(moment: np.datetime64) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + (moment.astype("datetime64[us]") - np.datetime64(0, "us")).item()


def resolve_cuts(events: Events, cuts: Sequence[datetime | float]) -> list[datetime]:
    """Cut times (UTC) from dates or fractions of the events' time range, sorted; duplicates refused.

    Example:
        >>> from semassoc.behaviour.events import events_from_baskets  # doctest: +SKIP
        >>> resolve_cuts(events, [0.5, datetime(2010, 9, 1)])  # doctest: +SKIP
    """
    if events.timestamp is None:
        raise InvalidInput("cuts need event times, and these events have no timestamp column")
    ts = events.timestamp.astype("datetime64[us]")
    known = ts[~np.isnat(ts)].astype(np.int64)
    if known.size == 0:
        raise InvalidInput("cuts need event times, and every timestamp is missing")
    lo, hi = int(known.min()), int(known.max())
    out: list[datetime] = []
    for cut in cuts:
        if isinstance(cut, datetime):
            out.append(_aware(_utc_naive(cut)))
        else:
            if not 0.0 < float(cut) < 1.0:
                raise InvalidInput(f"a cut given as a fraction must be between 0 and 1 (exclusive), not {cut}")
            out.append(_aware(np.datetime64(lo + round(float(cut) * (hi - lo)), "us")))
    out.sort()
    if len(set(out)) != len(out):
        raise InvalidInput(f"--cuts holds the same cut twice: {[c.isoformat() for c in out]}")
    return out
