"""Behaviour events: read, validate, filter and group user events into baskets.

An events file holds one row per event: a product id, and either a basket id (order, invoice, session) or a user id and
a timestamp from which sessions are cut by an inactivity gap. Event type (view, cart, purchase or any custom word),
quantity and timestamp are optional. CSV, JSON lines and Parquet are read with pyarrow; every column is turned into
numpy arrays in one vectorised pass, so half a million rows load in about a second. Python loops run only to describe
bad rows.

Row numbers in problems: CSV counts lines with the header as row 1 (so the first data row is row 2); JSON lines counts
lines from 1; Parquet counts data rows from 1. Blank lines, which are skipped, still count in CSV and JSON lines.

This module reads and validates; ``Events`` lives in :mod:`semassoc.behaviour.event_data` and the reading options
in :mod:`semassoc.behaviour.event_options` (both re-exported here).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semassoc.behaviour.event_data import (
    _MAX_PROBLEMS,
    CUSTOM_EVENT_WEIGHT,
    DEFAULT_EVENT_TYPE,
    DEFAULT_EVENT_WEIGHTS,
    Events,
    SkipSummary,
    _encode,
    events_from_baskets,
)
from semassoc.behaviour.event_options import (
    ONLINE_RETAIL_EXCLUDED_CODES,
    ONLINE_RETAIL_EXCLUDED_PATTERN,
    EventColumns,
    EventFilters,
    LoadOptions,
)
from semassoc.errors import InvalidInput, RowProblem
from semassoc.tables import BadRow, TableRead, read_table

__all__ = [
    "DEFAULT_EVENT_TYPE",
    "DEFAULT_EVENT_WEIGHTS",
    "ONLINE_RETAIL_EXCLUDED_CODES",
    "ONLINE_RETAIL_EXCLUDED_PATTERN",
    "EventColumns",
    "EventFilters",
    "Events",
    "LoadOptions",
    "SkipSummary",
    "events_from_baskets",
    "load_events",
]


# ----------------------------------------------------------------------------------------------------------- reading


class _Collector:
    """Bad rows found so far: a boolean mask for dropping them and the first few described for people."""

    def __init__(self, source: str, n_rows: int, row_number: Callable[[int], int]) -> None:
        self.source = source
        self.bad = np.zeros(n_rows, dtype=bool)
        self.reasons: Counter[str] = Counter()
        self.examples: list[tuple[int, str, str]] = []  # (table row, field, message); numbered when described
        self.row_number = row_number
        self.file_problems: list[RowProblem] = []

    def add(self, mask: np.ndarray, field_name: str, reason: str, values: pa.Array | None = None) -> None:
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return
        self.bad[idx] = True
        self.reasons[f"{field_name}: {reason}"] += int(idx.size)
        for i in idx[:_MAX_PROBLEMS].tolist():
            message = reason
            if values is not None:
                message = f"{reason} {values[i].as_py()!r}"
            self.examples.append((i, field_name, message))

    def add_bad_rows(self, rows: Sequence[BadRow]) -> None:
        for bad in rows:
            self.reasons[f"{bad.problem.field}: {bad.reason}"] += 1
            self.file_problems.append(bad.problem)

    def problems(self) -> list[RowProblem]:
        ordered = [RowProblem(self.source, self.row_number(i), f, m) for i, f, m in sorted(self.examples)]
        return sorted(self.file_problems + ordered, key=lambda p: (p.row is None, p.row or 0))

    @property
    def count(self) -> int:
        return int(self.bad.sum()) + len(self.file_problems)


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB pieces (data fingerprints in manifests and reports)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------------- conversion


def _as_text(column: pa.ChunkedArray, strip: bool) -> pa.ChunkedArray:
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        if pa.types.is_floating(column.type):
            # 13085.0 (a user id read as float because of missing values) should read as 13085.
            as_int = pc.cast(column, pa.int64(), safe=False)
            integral = pc.equal(pc.cast(as_int, column.type), column)
            column = pc.if_else(integral, pc.cast(as_int, pa.string()), pc.cast(column, pa.string()))
        else:
            column = pc.cast(column, pa.string())
    if strip:
        column = pc.utf8_trim_whitespace(column)
    return column


def _empty_mask(column: pa.ChunkedArray) -> np.ndarray:
    mask = pc.or_kleene(pc.is_null(column), pc.equal(pc.utf8_length(column), 0))
    return mask.to_numpy(zero_copy_only=False).astype(bool)


def _blank_to_null(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Text of a numeric or time column, trimmed, with blanks as null (``NA`` is a bad value, not a missing one)."""
    text = pc.utf8_trim_whitespace(pc.cast(column, pa.string()))
    return pc.if_else(pc.equal(pc.utf8_length(text), 0), pa.scalar(None, pa.string()), text)


def _parse_timestamps(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Event times as datetime64[us] UTC-naive, and a mask of values that are present but not times."""
    n = len(column)
    typ = column.type
    bad = np.zeros(n, dtype=bool)
    if pa.types.is_timestamp(typ):
        if typ.tz is not None:
            column = pc.cast(column, pa.timestamp("us", tz="UTC"), safe=False)
        values = pc.cast(column, pa.timestamp("us"), safe=False) if typ.tz is None else column
        arr = values.to_numpy(zero_copy_only=False)
        return arr.astype("datetime64[us]"), bad
    if pa.types.is_date(typ):
        return pc.cast(column, pa.timestamp("us")).to_numpy(zero_copy_only=False).astype("datetime64[us]"), bad
    if pa.types.is_integer(typ) or pa.types.is_floating(typ):
        seconds = column.to_numpy(zero_copy_only=False).astype(np.float64)
        out = np.full(n, np.datetime64("NaT"), dtype="datetime64[us]")
        ok = np.isfinite(seconds) & (np.abs(seconds) < 9e12)  # datetime64[us] holds about +-292,000 years
        bad = ~np.isnan(seconds) & ~ok
        out[ok] = (np.round(seconds[ok] * 1e6)).astype(np.int64).astype("datetime64[us]")
        return out, bad
    text = _blank_to_null(column)
    for target in (pa.timestamp("us"), pa.timestamp("us", tz="UTC")):
        try:
            parsed = pc.cast(text, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        if target.tz is not None:
            parsed = pc.cast(parsed, pa.timestamp("us"))
        return parsed.to_numpy(zero_copy_only=False).astype("datetime64[us]"), bad
    # Mixed or bad values: parse one by one (slower, but only for files with a problem or with mixed offsets).
    out = np.full(n, np.datetime64("NaT"), dtype="datetime64[us]")
    for i, value in enumerate(text.to_pylist()):
        if value is None:
            continue
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        except ValueError:
            bad[i] = True
            continue
        if moment.tzinfo is not None:
            moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
        out[i] = np.datetime64(moment, "us")
    return out, bad


def _parse_numbers(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Float values (NaN where missing) and a mask of values present but not numbers."""
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type):
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        return values, np.isinf(values)
    text = _blank_to_null(column)
    try:
        values = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        return values, np.isinf(values)
    except pa.ArrowInvalid:
        pass
    values = np.full(len(column), np.nan)
    bad = np.zeros(len(column), dtype=bool)
    for i, value in enumerate(text.to_pylist()):
        if value is None:
            continue
        try:
            values[i] = float(value)
        except ValueError:
            bad[i] = True
    bad |= np.isinf(values)
    return values, bad


def _cut_sessions(
    user: np.ndarray, user_ids: np.ndarray, ts: np.ndarray, gap: timedelta
) -> tuple[np.ndarray, np.ndarray]:
    """Basket per row: a new session starts when a user has been inactive for more than ``gap``."""
    n = user.shape[0]
    if n == 0:
        return np.array([], dtype=object), np.zeros(0, dtype=np.int64)
    t = ts.astype(np.int64)
    order = np.lexsort((t, user))
    u_sorted, t_sorted = user[order], t[order]
    gap_us = int(gap / timedelta(microseconds=1))
    start = np.ones(n, dtype=bool)
    start[1:] = (u_sorted[1:] != u_sorted[:-1]) | ((t_sorted[1:] - t_sorted[:-1]) > gap_us)
    session_sorted = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    # Key "<user>@<ISO start>": stable across loads, so the same session read twice gets the same key.
    start_text = np.datetime_as_string(t_sorted[first].astype("datetime64[us]"), unit="us")
    keys = np.char.add(np.char.add(user_ids[u_sorted[first]].astype(str), "@"), start_text).astype(object)
    order_keys = np.argsort(keys, kind="stable")
    rank = np.empty(order_keys.shape[0], dtype=np.int64)
    rank[order_keys] = np.arange(order_keys.shape[0])
    basket = np.empty(n, dtype=np.int64)
    basket[order] = rank[session_sorted]
    return keys[order_keys], basket


@dataclass
class _Checked:
    """The columns of one read, converted, and the rows found bad."""

    bad: _Collector
    item: pa.ChunkedArray
    basket: pa.ChunkedArray | None = None
    user: pa.ChunkedArray | None = None
    timestamp: np.ndarray | None = None
    quantity: np.ndarray | None = None
    event_type: pa.ChunkedArray | None = None


def _validate(read: TableRead, cols: EventColumns, strip_ids: bool) -> _Checked:
    """Convert the columns ``cols`` names and collect every bad row (read problems and bad values).

    A timestamp column, when there is one, must hold a time on every row (with or without time decay), so that
    strict mode treats a missing time the same way whatever the other options are.
    """
    table = read.table
    bad = _Collector(read.source, read.num_rows, read.row_number)
    bad.add_bad_rows(read.bad_rows)

    def text(name: str) -> pa.ChunkedArray:
        return _column(read, name, lambda c: _as_text(c, strip_ids))

    checked = _Checked(bad, text(cols.item))  # type: ignore[arg-type]
    bad.add(_empty_mask(checked.item), cols.item, "empty product id")  # type: ignore[arg-type]
    if cols.basket is not None:
        checked.basket = text(cols.basket)
        bad.add(_empty_mask(checked.basket), cols.basket, "empty basket id")
    if cols.user is not None:
        checked.user = text(cols.user)
        if cols.basket is None:
            bad.add(_empty_mask(checked.user), cols.user, "empty user id")
    if cols.timestamp is not None:
        checked.timestamp, bad_ts = _column(read, cols.timestamp, _parse_timestamps)
        bad.add(bad_ts, cols.timestamp, "bad timestamp", table[cols.timestamp])
        bad.add(np.isnat(checked.timestamp) & ~bad_ts, cols.timestamp, "missing timestamp")
    if cols.quantity is not None:
        checked.quantity, bad_q = _column(read, cols.quantity, _parse_numbers)
        bad.add(bad_q, cols.quantity, "bad quantity", table[cols.quantity])
    if cols.event_type is not None:
        checked.event_type = pc.utf8_lower(text(cols.event_type))
        bad.add(_empty_mask(checked.event_type), cols.event_type, "empty event type")
    return checked


def _pseudonymise(column: pa.ChunkedArray, key: bytes) -> pa.Array:
    """Each distinct user id replaced by its keyed hash (nulls stay null)."""
    from semassoc.privacy import pseudonymise

    encoded = pc.dictionary_encode(column.combine_chunks())
    hashed = pa.array([pseudonymise(v, key) for v in encoded.dictionary.to_pylist()], pa.string())
    return pc.take(hashed, encoded.indices)


def _column(read: TableRead, name: str, convert: Callable[[pa.ChunkedArray], Any]) -> Any:
    """``convert`` applied to a column; a column of a type that cannot be read (e.g. nested Parquet) is bad input."""
    column = read.table[name]
    try:
        return convert(column)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        message = f"cannot read a column of type {column.type}: {exc}"
        raise InvalidInput(f"{read.source}: field '{name}': {message}") from None


def load_events(
    path: str | Path,
    columns: EventColumns | Mapping[str, str] | None = None,
    *,
    session_gap: timedelta = timedelta(minutes=30),
    weights: Mapping[str, float] | None = None,
    half_life: timedelta | None = None,
    decay_reference: datetime | None = None,
    filters: EventFilters | None = None,
    on_error: Literal["strict", "skip"] = "strict",
    strip_ids: bool = True,
    delimiter: str | None = None,
    user_key: bytes | None = None,
) -> Events:
    """Read an events file (CSV, TSV, JSON lines or Parquet), validate it and group rows into baskets.

    Rows with a basket column are grouped by it. Without one, each user's events are cut into sessions wherever
    the user was inactive for more than ``session_gap``.

    Args:
        path: the events file; the format comes from the suffix (.csv, .tsv, .jsonl, .ndjson, .parquet; .gz for text).
        columns: which column is which field (``EventColumns`` or a dict ``{"item": "sku", ...}``); undetected fields
            are found from usual names (see ``EventColumns``).
        session_gap: inactivity gap that ends a session when there is no basket column.
        weights: weight per event type (default ``DEFAULT_EVENT_WEIGHTS``: view 1, cart 3, purchase 5); types not
            listed weigh ``CUSTOM_EVENT_WEIGHT`` (1).
        half_life: if given, weights halve for every ``half_life`` an event lies before ``decay_reference``.
        decay_reference: the "now" of the time decay (default: the latest event time in the file). Pass the same
            value to every load when you update statistics incrementally, or old and new files decay differently.
        filters: rows to drop on purpose (default ``EventFilters()``: quantity <= 0); ``EventFilters.online_retail()``
            also drops cancellations and non-product codes.
        on_error: ``"strict"`` (default) raises ``InvalidInput`` naming the first problem and returns nothing;
            ``"skip"`` drops bad rows and reports them in ``Events.skipped``.
        strip_ids: strip surrounding whitespace from product, basket, user ids and event types.
        delimiter: CSV delimiter; detected (``,``, ``;``, tab or ``|``) when ``None``.
        user_key: pseudonymise user ids with this key (:mod:`semassoc.privacy`) as soon as they are read; messages
            then quote no row.

    Returns:
        ``Events`` with one entry per kept row.

    Raises:
        InvalidInput: unreadable file, missing column, or (strict mode) any bad row: empty product/basket/user id,
            bad timestamp, bad quantity, empty event type.

    Example:
        >>> events = load_events("online_retail.parquet", filters=EventFilters.online_retail())  # doctest: +SKIP
        >>> events.n_baskets, events.n_items  # doctest: +SKIP
        (19213, 4372)
    """
    if on_error not in ("strict", "skip"):
        raise InvalidInput(f"on_error must be 'strict' or 'skip', not {on_error!r}")
    if session_gap <= timedelta(0):
        raise InvalidInput("session_gap must be positive")
    if half_life is not None and half_life <= timedelta(0):
        raise InvalidInput("half_life must be positive")
    weights = dict(DEFAULT_EVENT_WEIGHTS if weights is None else weights)
    for name, value in weights.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise InvalidInput(f"weight of event type {name!r} must be a finite number >= 0, not {value!r}")
    filters = filters or EventFilters()
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise InvalidInput(f"{source}: events file not found")
    read = read_table(path, delimiter=delimiter, quote_rows=user_key is None)
    if isinstance(columns, Mapping):
        columns = EventColumns.from_mapping(columns)
    cols = (columns or EventColumns()).resolve(read.columns, source)
    cols.check_usable(source, read.columns, time_decay=half_life is not None)

    checked = _validate(read, cols, strip_ids)
    if checked.bad.count and not read.exact_numbers:
        # Naming rows needs their numbers: validate again on the exact (row by row) read of the file.
        read = read.exact()
        checked = _validate(read, cols, strip_ids)
    bad = checked.bad
    n = read.num_rows
    item_col, basket_col, user_col = checked.item, checked.basket, checked.user
    timestamp, quantity, type_col = checked.timestamp, checked.quantity, checked.event_type
    if user_key is not None and user_col is not None:
        user_col = _pseudonymise(user_col, user_key)
    if bad.count:
        problems = bad.problems()
        if on_error == "strict":
            raise InvalidInput(_strict_message(problems[0], bad.count))
    skipped = SkipSummary(rows=bad.count, reasons=dict(bad.reasons), problems=tuple(bad.problems()[:_MAX_PROBLEMS]))

    # Filters (on purpose, not errors), counted on rows that passed validation.
    keep = ~bad.bad
    filtered: dict[str, int] = {}

    def drop(mask: np.ndarray, reason: str) -> None:
        hit = mask & keep
        count = int(hit.sum())
        if count:
            filtered[reason] = filtered.get(reason, 0) + count
            keep[hit] = False

    if quantity is not None and filters.drop_nonpositive_quantity:
        drop(quantity <= 0, "quantity <= 0")
    if basket_col is not None and filters.cancellation_prefix:
        starts = pc.starts_with(basket_col, filters.cancellation_prefix)
        drop(pc.fill_null(starts, False).to_numpy(zero_copy_only=False).astype(bool), "cancellation")
    if filters.excluded_items:
        listed = pc.is_in(item_col, value_set=pa.array(sorted(filters.excluded_items), pa.string()))
        drop(pc.fill_null(listed, False).to_numpy(zero_copy_only=False).astype(bool), "non-product code")
    if filters.excluded_item_pattern:
        try:
            re.compile(filters.excluded_item_pattern)
            matched = pc.match_substring_regex(item_col, filters.excluded_item_pattern)
        except (re.error, pa.ArrowInvalid) as exc:
            raise InvalidInput(f"bad excluded_item_pattern {filters.excluded_item_pattern!r}: {exc}") from None
        drop(pc.fill_null(matched, False).to_numpy(zero_copy_only=False).astype(bool), "non-product code")

    keep_idx = pa.array(np.flatnonzero(keep))
    item_ids, item = _encode(item_col.take(keep_idx))
    if timestamp is not None:
        timestamp = timestamp[keep]
    if quantity is not None:
        quantity = quantity[keep]
    user_ids = user = None
    if user_col is not None:
        user_ids, user = _encode(user_col.take(keep_idx))
    if basket_col is not None:
        basket_ids, basket = _encode(basket_col.take(keep_idx))
    else:
        basket_ids, basket = _cut_sessions(user, user_ids, timestamp, session_gap)  # type: ignore[arg-type]
    if type_col is not None:
        event_types, event_type = _encode(type_col.take(keep_idx))
    else:
        event_types, event_type = np.array([DEFAULT_EVENT_TYPE], dtype=object), np.zeros(item.shape[0], np.int64)
    type_weight = np.array([float(weights.get(t, CUSTOM_EVENT_WEIGHT)) for t in event_types.tolist()], np.float64)
    weight = type_weight[event_type] if event_type.size else np.zeros(0, np.float64)
    if half_life is not None and timestamp is not None and timestamp.size:
        reference = (
            np.datetime64(decay_reference.astimezone(timezone.utc).replace(tzinfo=None), "us")
            if decay_reference is not None and decay_reference.tzinfo is not None
            else np.datetime64(decay_reference, "us")
            if decay_reference is not None
            else timestamp.max()
        )
        age = (reference - timestamp).astype(np.float64) / (half_life / timedelta(microseconds=1))
        weight = weight * np.power(0.5, age)

    return Events(
        item_ids=item_ids,
        item=item.astype(np.int32),
        basket_ids=basket_ids,
        basket=basket.astype(np.int64),
        weight=weight,
        event_types=event_types,
        event_type=event_type.astype(np.int16),
        user_ids=user_ids,
        user=None if user is None else user.astype(np.int32),
        timestamp=timestamp,
        quantity=quantity,
        sources=(source,),
        digests=(file_sha256(path),),
        rows_read=n + len(read.bad_rows),
        skipped=skipped,
        filtered=filtered,
    )


def _strict_message(first: RowProblem, count: int) -> str:
    """One line: the first problem, how many more, and that nothing was loaded."""
    more = f"; {count - 1} more bad row(s)" if count > 1 else ""
    return f"{first}{more}; nothing loaded (--on-error skip loads the good rows)"
