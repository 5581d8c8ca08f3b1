"""Events reading options from their user-facing form: cleaning presets, ``TYPE=W`` weights, one LoadOptions.

The command line hands option values here unchanged; the parsing and the checks live in the library so that every
caller (CLI, API, notebooks) reads ``--preset online-retail --weight purchase=5`` alike.

Example:
    >>> load_options(preset="online-retail", weights=["purchase=5"]).filters.cancellation_prefix
    'C'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from semassoc.behaviour.event_options import EventColumns, EventFilters, LoadOptions
from semassoc.errors import InvalidInput

#: Named cleaning presets.
PRESETS: dict[str, Callable[[], EventFilters]] = {"online-retail": EventFilters.online_retail}


def event_filters(
    preset: str | None = None,
    *,
    cancellation_prefix: str | None = None,
    exclude_items: Iterable[str] = (),
    exclude_pattern: str | None = None,
    keep_nonpositive: bool = False,
) -> EventFilters:
    """A preset's filters (none: only quantity <= 0 dropped) with the explicit options added or overriding."""
    if preset is not None and preset not in PRESETS:
        raise InvalidInput(f"--preset {preset}: the only preset is {', '.join(repr(p) for p in PRESETS)}")
    base = PRESETS[preset]() if preset else EventFilters()
    return EventFilters(
        drop_nonpositive_quantity=not keep_nonpositive,
        cancellation_prefix=cancellation_prefix or base.cancellation_prefix,
        excluded_items=frozenset(base.excluded_items | set(exclude_items)),
        excluded_item_pattern=exclude_pattern or base.excluded_item_pattern,
    )


def parse_weights(pairs: Sequence[str] | None) -> dict[str, float] | None:
    """``["purchase=5", "view=1"]`` as ``{"purchase": 5.0, "view": 1.0}`` (type names lower-cased); None if empty."""
    if not pairs:
        return None
    weights: dict[str, float] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            weights[name.strip().lower()] = float(value)
        except ValueError:
            raise InvalidInput(f"--weight {pair!r}: expected TYPE=NUMBER, e.g. purchase=5") from None
    return weights


def load_options(
    *,
    columns: Sequence[str | None] = (),
    session_gap_minutes: float = 30.0,
    weights: Sequence[str] | None = None,
    half_life_days: float | None = None,
    preset: str | None = None,
    cancellation_prefix: str | None = None,
    exclude_items: Iterable[str] = (),
    exclude_pattern: str | None = None,
    keep_nonpositive: bool = False,
    on_error: str = "strict",
    delimiter: str | None = None,
) -> LoadOptions:
    """One :class:`LoadOptions` from option values; ``columns`` are item, basket, user, timestamp, event type and
    quantity column names in that order (None: detected)."""
    if on_error not in ("strict", "skip"):
        raise InvalidInput(f"--on-error must be 'strict' or 'skip', not {on_error!r}")
    mode: Literal["strict", "skip"] = "strict" if on_error == "strict" else "skip"
    return LoadOptions(
        columns=EventColumns(*columns),
        session_gap_minutes=session_gap_minutes,
        weights=parse_weights(weights),
        half_life_days=half_life_days,
        filters=event_filters(
            preset,
            cancellation_prefix=cancellation_prefix,
            exclude_items=exclude_items,
            exclude_pattern=exclude_pattern,
            keep_nonpositive=keep_nonpositive,
        ),
        on_error=mode,
        delimiter=delimiter,
    )
