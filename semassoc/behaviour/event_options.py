"""How to read an events file: which column is which field (``EventColumns``), rows dropped on purpose
(``EventFilters``), and all of ``load_events``'s settings as one value stored in a workspace manifest
(``LoadOptions``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from semassoc.errors import InvalidInput

if TYPE_CHECKING:
    from semassoc.behaviour.event_data import Events

#: Online Retail (UCI) stock codes that are not products: postage, discounts, manual entries, fees, samples...
ONLINE_RETAIL_EXCLUDED_CODES: frozenset[str] = frozenset(
    {"POST", "D", "M", "DOT", "BANK CHARGES", "AMAZONFEE", "C2", "CRUK", "PADS", "S", "B", "m"}
)
#: Online Retail stock-code prefixes that are not products (gift vouchers, DCGS lines).
ONLINE_RETAIL_EXCLUDED_PATTERN = r"^(DCGS|gift_0001_)"

# Usual column names, normalised (lower case, runs of non-alphanumerics as "_"), in order of preference.
_ALIASES: dict[str, tuple[str, ...]] = {
    "basket": (
        "basket_id",
        "basket",
        "order_id",
        "orderid",
        "invoice",
        "invoiceno",
        "invoice_no",
        "invoice_id",
        "transaction_id",
        "transactionid",
        "session_id",
        "sessionid",
        "user_session",
    ),
    "item": (
        "product_id",
        "productid",
        "item_id",
        "itemid",
        "stockcode",
        "stock_code",
        "sku",
        "product",
        "item",
    ),
    "user": (
        "user_id",
        "userid",
        "customer_id",
        "customerid",
        "visitor_id",
        "visitorid",
        "client_id",
        "user",
        "customer",
    ),
    "timestamp": (
        "timestamp",
        "event_time",
        "eventtime",
        "invoicedate",
        "invoice_date",
        "order_date",
        "datetime",
        "time",
        "date",
        "ts",
    ),
    "quantity": ("quantity", "qty", "amount"),
    "event_type": ("event_type", "eventtype", "event", "action", "type"),
}


def _normalise_name(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


@dataclass(frozen=True)
class EventColumns:
    """Which column of the file holds which field. ``None`` means: detect it from usual names.

    Detection looks for usual names, ignoring case, spaces and punctuation: ``Invoice``/``order_id``/``basket_id``/
    ``session_id`` for the basket, ``StockCode``/``product_id``/``item_id``/``sku`` for the product,
    ``Customer ID``/``user_id``/``customer_id`` for the user, ``InvoiceDate``/``timestamp``/``event_time`` for the
    time, ``Quantity``/``qty`` and ``event_type``/``event``. Name a field explicitly when detection would pick the
    wrong column.

    Args:
        item: product id column (required, detected if ``None``).
        basket: order / basket / session id column (optional).
        user: user id column (required when there is no basket column).
        timestamp: event time column (required when there is no basket column, or with time decay).
        event_type: event type column (optional; every row is a purchase without it).
        quantity: quantity column (optional).

    Example:
        >>> EventColumns(item="sku", basket="order").resolve(["order", "sku", "when"]).basket
        'order'
    """

    item: str | None = None
    basket: str | None = None
    user: str | None = None
    timestamp: str | None = None
    event_type: str | None = None
    quantity: str | None = None

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str]) -> EventColumns:
        """Build from a ``{field: column}`` dict, e.g. ``{"item": "sku", "basket": "order"}``.

        Raises:
            InvalidInput: on an unknown field name.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise InvalidInput(f"unknown event field(s) {unknown} in column mapping; known fields: {sorted(known)}")
        return cls(**dict(mapping))

    def resolve(self, names: Sequence[str], source: str = "events") -> EventColumns:
        """Fill in undetected fields from the column names of a file and check explicit ones exist.

        Args:
            names: the column names found in the file.
            source: file name used in error messages.

        Returns:
            A copy where every field is a column name of the file or ``None`` (absent).

        Raises:
            InvalidInput: a named column is missing, or the product column cannot be found.
        """
        by_norm: dict[str, str] = {}
        for name in names:
            by_norm.setdefault(_normalise_name(name), name)
        chosen: dict[str, str | None] = {}
        taken: set[str] = set()
        for f in fields(self):
            explicit = getattr(self, f.name)
            if explicit is not None:
                if explicit not in names:
                    raise InvalidInput(
                        f"{source}: column {explicit!r} (mapped to field '{f.name}') is missing; "
                        f"columns found: {list(names)}"
                    )
                chosen[f.name] = explicit
                taken.add(explicit)
        for f in fields(self):
            if f.name in chosen:
                continue
            chosen[f.name] = None
            for alias in _ALIASES[f.name]:
                column = by_norm.get(alias)
                if column is not None and column not in taken:
                    chosen[f.name] = column
                    taken.add(column)
                    break
        return EventColumns(**chosen)

    def check_usable(self, source: str, found: Sequence[str], *, time_decay: bool) -> str:
        """Refuse resolved columns that cannot make baskets: no product column, no basket column and nothing to cut
        sessions by (user and time), or time decay without a time column.

        Args:
            source: the file named in the messages.
            found: the file's column names, listed in the messages.
            time_decay: a half-life is set.

        Returns:
            The product id column.

        Raises:
            InvalidInput: one line naming the file, what is missing and the columns found.
        """
        if self.item is None:
            raise InvalidInput(
                f"{source}: no product id column (looked for product_id, item_id, StockCode, sku...); "
                f"columns found: {found}; name it with columns={{'item': ...}}"
            )
        if self.basket is None and (self.user is None or self.timestamp is None):
            missing = [name for name, col in (("user", self.user), ("timestamp", self.timestamp)) if col is None]
            raise InvalidInput(
                f"{source}: without a basket/order/session column, sessions are cut per user by time, which needs "
                f"{' and '.join(missing)} column(s); columns found: {found}"
            )
        if time_decay and self.timestamp is None:
            raise InvalidInput(f"{source}: time decay (half_life) needs a timestamp column; columns found: {found}")
        return self.item


@dataclass(frozen=True)
class EventFilters:
    """Rows to drop on purpose (not errors): counted in ``Events.filtered`` by reason.

    Args:
        drop_nonpositive_quantity: drop rows whose quantity is <= 0 (returns, corrections). Only acts when there is
            a quantity column.
        cancellation_prefix: drop rows whose basket id starts with this (Online Retail cancellations start with "C").
        excluded_items: product ids that are not products (postage, fees...), compared exactly after id stripping.
        excluded_item_pattern: a regular expression (RE2 syntax, searched) of product ids to drop.

    Example:
        >>> EventFilters.online_retail().cancellation_prefix
        'C'
    """

    drop_nonpositive_quantity: bool = True
    cancellation_prefix: str | None = None
    excluded_items: frozenset[str] = frozenset()
    excluded_item_pattern: str | None = None

    @classmethod
    def online_retail(cls) -> EventFilters:
        """The cleaning the UCI Online Retail data needs: cancellations, quantity <= 0 and non-product codes."""
        return cls(
            drop_nonpositive_quantity=True,
            cancellation_prefix="C",
            excluded_items=ONLINE_RETAIL_EXCLUDED_CODES,
            excluded_item_pattern=ONLINE_RETAIL_EXCLUDED_PATTERN,
        )


_MAX_DAYS = 1_000_000_000 // 1000
_MAX_MINUTES = _MAX_DAYS * 24 * 60


@dataclass(frozen=True)
class LoadOptions:
    """How to read an events file: everything ``load_events`` takes, as one value that can live in a manifest.

    ``behavior update`` reuses the options ``behavior build`` stored, so every file of a workspace is read alike.
    """

    columns: EventColumns = field(default_factory=EventColumns)
    session_gap_minutes: float = 30.0
    weights: Mapping[str, float] | None = None
    half_life_days: float | None = None
    filters: EventFilters = field(default_factory=EventFilters)
    on_error: Literal["strict", "skip"] = "strict"
    delimiter: str | None = None
    pseudonymise_users: bool = False

    def __post_init__(self) -> None:
        # Bounds that a timedelta can hold (about 2.7 million years): an absurd value is bad input, not an overflow.
        gap = self.session_gap_minutes
        if not (isinstance(gap, int | float) and math.isfinite(gap) and 0 < gap <= _MAX_MINUTES):
            raise InvalidInput(f"session gap must be more than 0 and at most {_MAX_MINUTES:,} minutes, not {gap!r}")
        life = self.half_life_days
        if life is not None and not (isinstance(life, int | float) and math.isfinite(life) and 0 < life <= _MAX_DAYS):
            raise InvalidInput(f"half-life must be more than 0 and at most {_MAX_DAYS:,} days, not {life!r}")

    def load(self, path: str | Path) -> Events:
        """Read one events file with these options."""
        from semassoc.behaviour.events import load_events
        from semassoc.privacy import user_key

        return load_events(
            path,
            self.columns,
            session_gap=timedelta(minutes=self.session_gap_minutes),
            weights=self.weights,
            half_life=None if self.half_life_days is None else timedelta(days=self.half_life_days),
            filters=self.filters,
            on_error=self.on_error,
            delimiter=self.delimiter,
            user_key=user_key() if self.pseudonymise_users else None,
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (for the workspace manifest)."""
        return {
            "columns": {f.name: getattr(self.columns, f.name) for f in fields(self.columns)},
            "session_gap_minutes": self.session_gap_minutes,
            "weights": None if self.weights is None else dict(self.weights),
            "half_life_days": self.half_life_days,
            "filters": {
                "drop_nonpositive_quantity": self.filters.drop_nonpositive_quantity,
                "cancellation_prefix": self.filters.cancellation_prefix,
                "excluded_items": sorted(self.filters.excluded_items),
                "excluded_item_pattern": self.filters.excluded_item_pattern,
            },
            "on_error": self.on_error,
            "delimiter": self.delimiter,
            "pseudonymise_users": self.pseudonymise_users,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> LoadOptions:
        """Inverse of :meth:`to_dict`."""
        filters = dict(data.get("filters") or {})  # type: ignore[call-overload]
        filters["excluded_items"] = frozenset(filters.get("excluded_items") or ())
        return cls(
            columns=EventColumns(**dict(data.get("columns") or {})),  # type: ignore[call-overload]
            session_gap_minutes=float(data.get("session_gap_minutes", 30.0)),  # type: ignore[arg-type]
            weights=data.get("weights"),  # type: ignore[arg-type]
            half_life_days=data.get("half_life_days"),  # type: ignore[arg-type]
            filters=EventFilters(**filters),
            on_error=data.get("on_error", "strict"),  # type: ignore[arg-type]
            delimiter=data.get("delimiter"),  # type: ignore[arg-type]
            pseudonymise_users=bool(data.get("pseudonymise_users", False)),
        )
