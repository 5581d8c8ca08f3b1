"""Catalog ingestion: read products from CSV, JSONL or Parquet, map columns, validate and normalise text.

Every problem is reported with the file, the row and the field. For CSV and JSONL the row is the line number an
editor shows (the CSV header is row 1; a record spanning lines is numbered by its first line); for Parquet it is the
1-based data row.
"""

from __future__ import annotations

import html
import json
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import tomllib

from semassoc.errors import InvalidInput, RowProblem
from semassoc.tables import read_table

OnError = Literal["strict", "skip"]

#: Names looked for, in order, when a column is not mapped explicitly (compared case-insensitively,
#: ignoring spaces, dashes and underscores).
COLUMN_CANDIDATES: dict[str, tuple[str, ...]] = {
    "id": ("product_id", "productid", "id", "sku", "item_id", "itemid", "stockcode", "asin", "article_id", "product"),
    "title": ("title", "product_title", "name", "product_name", "productname"),
    "description": ("description", "desc", "body", "long_description", "details"),
    "category": ("category", "category_name", "categories", "department", "aisle", "product_type"),
    "brand": ("brand", "brand_name", "manufacturer", "vendor"),
    "price": ("price", "unit_price", "unitprice", "list_price", "sale_price"),
    "in_stock": ("in_stock", "instock", "available", "availability", "is_available", "stock_status"),
}

_TRUE = {"true", "t", "yes", "y", "1", "in stock", "instock", "available"}
_FALSE = {"false", "f", "no", "n", "0", "out of stock", "outofstock", "unavailable", "sold out"}
_TAG = re.compile(r"<[^>]{0,2000}>")
_SPACE = re.compile(r"\s+")


def normalise_text(value: str) -> str:
    """Normalise product text: HTML entities decoded, tags removed, Unicode NFKC, whitespace collapsed.

    CJK and other non-Latin scripts are kept as they are (NFKC only folds compatibility forms such as
    full-width Latin letters).

    Example:
        >>> normalise_text("  Mug&nbsp;<b>Red</b>\\n 350 ml ")
        'Mug Red 350 ml'
    """
    text = html.unescape(value)
    text = _TAG.sub(" ", text)
    text = unicodedata.normalize("NFKC", text)
    return _SPACE.sub(" ", text).strip()


@dataclass(frozen=True)
class Product:
    """One catalog product after validation and normalisation."""

    product_id: str
    title: str
    description: str | None = None
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    in_stock: bool | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        """The product as a store payload (absent optional fields are left out, so filters treat them as missing)."""
        payload: dict[str, Any] = {"product_id": self.product_id, "title": self.title}
        for name in ("description", "category", "brand", "price", "in_stock"):
            value = getattr(self, name)
            if value is not None:
                payload[name] = value
        if self.attributes:
            payload["attributes"] = self.attributes
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Product:
        """Rebuild a product from :meth:`to_payload`'s output (extra bookkeeping keys are ignored)."""
        names = ("product_id", "title", "description", "category", "brand", "price", "in_stock")
        return cls(**{n: payload[n] for n in names if n in payload}, attributes=dict(payload.get("attributes") or {}))

    def fields_for_prompt(self) -> dict[str, str]:
        """The values a prompt template may refer to, as strings ('' when absent)."""
        values = {
            "product_id": self.product_id,
            "title": self.title,
            "description": self.description or "",
            "category": self.category or "",
            "brand": self.brand or "",
            "price": "" if self.price is None else f"{self.price:g}",
        }
        for key, value in self.attributes.items():
            values.setdefault(key, "" if value is None else str(value))
        return values


@dataclass(frozen=True)
class CatalogColumns:
    """Which source column feeds each product field. ``None`` means "detect it" (id and title) or "absent"."""

    id: str | None = None
    title: str | None = None
    description: str | None = None
    category: str | None = None
    brand: str | None = None
    price: str | None = None
    in_stock: str | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> CatalogColumns:
        """Read a column mapping from a TOML file (a ``[columns]`` table, or top-level keys) or a JSON object.

        Example file::

            [columns]
            id = "StockCode"
            title = "Description"
        """
        path = Path(path)
        try:
            raw = path.read_text(encoding="utf-8")
            data = json.loads(raw) if path.suffix.lower() == ".json" else tomllib.loads(raw)
        except UnicodeDecodeError as exc:
            byte = exc.object[exc.start]
            raise InvalidInput(f"{path}: the column mapping is not UTF-8 text (byte 0x{byte:02x})") from None
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{path}: cannot read column mapping: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidInput(f"{path}: a column mapping is a table of field = column, not {type(data).__name__}")
        data = data.get("columns", data)
        if not isinstance(data, dict) or not all(isinstance(v, str) and v for v in data.values()):
            raise InvalidInput(f'{path}: a column mapping maps each field to a column name (text), e.g. id = "sku"')
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(f"{path}: unknown column mapping key(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: str(v) for k, v in data.items()})

    def merged(self, override: CatalogColumns) -> CatalogColumns:
        """This mapping with every field that ``override`` sets replaced."""
        return CatalogColumns(**{f.name: getattr(override, f.name) or getattr(self, f.name) for f in fields(self)})

    def resolve(self, header: list[str], source: str) -> dict[str, str | None]:
        """Map each product field to a column of ``header``; raise InvalidInput when id or title is missing."""
        folded = {_fold(name): name for name in header}
        explicit = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        for name, wanted in explicit.items():
            if wanted not in header:
                raise InvalidInput(f"{source}: column '{wanted}' (mapped to {name}) not found; columns: {header}")
        resolved: dict[str, str | None] = {}
        for f in fields(self):
            if f.name in explicit:
                resolved[f.name] = explicit[f.name]
                continue
            # Detection never takes a column that is mapped explicitly or already detected for another field.
            used = set(explicit.values()) | {c for c in resolved.values() if c is not None}
            resolved[f.name] = next(
                (folded[c] for c in COLUMN_CANDIDATES[f.name] if c in folded and folded[c] not in used), None
            )
        taken = [c for c in resolved.values() if c is not None]
        if len(taken) != len(set(taken)):
            raise InvalidInput(f"{source}: one column is mapped to two fields: {resolved}; map them explicitly")
        for required in ("id", "title"):
            if resolved[required] is None:
                raise InvalidInput(
                    f"{source}: no {required} column found among {header}; map it with --{required}-column"
                )
        return resolved


def _fold(name: str) -> str:
    return re.sub(r"[\s_\-]+", "_", name.strip().lower())


@dataclass
class CatalogReadResult:
    """Products that passed validation, and the problems found on the other rows."""

    products: list[Product]
    problems: list[RowProblem]
    rows_read: int


def read_catalog(
    path: str | Path,
    columns: CatalogColumns | None = None,
    *,
    on_error: OnError = "strict",
    delimiter: str | None = None,
) -> CatalogReadResult:
    """Read and validate a catalog file (.csv, .tsv, .jsonl/.ndjson, .parquet, each optionally .gz).

    The file is read by :func:`semassoc.tables.read_table` (the same reader as events files): a row that cannot
    be read (invalid UTF-8, wrong number of fields, not a JSON object) is a problem of that row only.

    Args:
        path: The catalog file.
        columns: Column mapping; unmapped fields are detected from the usual names.
        on_error: ``"strict"`` raises InvalidInput at the first bad row (nothing is returned, so nothing gets
            written); ``"skip"`` keeps the good rows and lists the bad ones in ``problems``.
        delimiter: CSV delimiter; detected (``,``, ``;``, tab or ``|``) when ``None``.

    Returns:
        CatalogReadResult with the valid products in file order.

    Example:
        >>> result = read_catalog("examples/online_retail/catalog.csv")  # doctest: +SKIP
        >>> result.products[0].title  # doctest: +SKIP
    """
    path = Path(path)
    if on_error not in ("strict", "skip"):
        raise InvalidInput(f"on_error must be 'strict' or 'skip', not {on_error!r}")
    if not path.exists():
        raise InvalidInput(f"{path}: catalog file not found")
    columns = columns or CatalogColumns()
    source = str(path)
    read = read_table(path, delimiter=delimiter, exact=True)
    mapping = columns.resolve(read.columns, source)
    products: list[Product] = []
    problems: list[RowProblem] = [bad.problem for bad in read.bad_rows]
    first_row: dict[str, int] = {}
    for number, row in read.rows():
        try:
            product = _product_from_row(row, mapping, read.columns)
            if product.product_id in first_row:
                raise _FieldError(
                    mapping["id"] or "id",
                    f"duplicate id {product.product_id!r} (first seen at row {first_row[product.product_id]})",
                )
        except _FieldError as exc:
            problems.append(RowProblem(source, number, exc.field, exc.message))
            continue
        first_row[product.product_id] = number
        products.append(product)
    rows_read = read.rows_read
    if rows_read == 0:
        raise InvalidInput(f"{source}: the catalog has no rows")
    problems.sort(key=lambda p: p.row or 0)
    if problems and on_error == "strict":
        more = f"; {len(problems) - 1} more bad row(s)" if len(problems) > 1 else ""
        raise InvalidInput(f"{problems[0]}{more} (use --on-error skip to index the other rows)")
    return CatalogReadResult(products=products, problems=problems, rows_read=rows_read)


class _FieldError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _product_from_row(row: Mapping[str, Any], mapping: Mapping[str, str | None], header: list[str]) -> Product:
    id_column = mapping["id"] or "id"
    title_column = mapping["title"] or "title"
    product_id = _identifier(row.get(id_column))
    if not product_id:
        raise _FieldError(id_column, "missing product id")
    title = _text(row.get(title_column))
    if not title:
        raise _FieldError(title_column, "missing title")
    values: dict[str, Any] = {"product_id": product_id, "title": title}
    for name in ("description", "category", "brand"):
        column = mapping[name]
        if column is not None:
            values[name] = _text(row.get(column)) or None
    if mapping["price"] is not None:
        values["price"] = _price(row.get(mapping["price"]), mapping["price"])
    if mapping["in_stock"] is not None:
        values["in_stock"] = _flag(row.get(mapping["in_stock"]), mapping["in_stock"])
    used = {c for c in mapping.values() if c is not None}
    attributes = {}
    for key, value in row.items():
        if key in used or _missing(value):
            continue
        attributes[str(key)] = _plain(value, str(key))
    values["attributes"] = attributes
    return Product(**values)


def _missing(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def _identifier(value: Any) -> str:
    """Ids are only stripped (never re-encoded), the same as event files' ids, so the two always join."""
    if _missing(value):
        return ""
    if isinstance(value, (dict, list)):
        raise _FieldError("row", f"expected an id, found {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # ids read as floats from JSON or Parquet
    return str(value).strip()


def _text(value: Any) -> str:
    if _missing(value):
        return ""
    if isinstance(value, (dict, list)):
        raise _FieldError("row", f"expected text, found {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # ids read as floats from JSON or Parquet
    return normalise_text(str(value))


def _price(value: Any, column: str) -> float | None:
    if _missing(value):
        return None
    if isinstance(value, bool):
        raise _FieldError(column, f"expected a number, found {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise _FieldError(column, f"expected a number, found {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise _FieldError(column, f"expected a non-negative finite price, found {value!r}")
    return number


def _flag(value: Any, column: str) -> bool | None:
    if _missing(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _FieldError(column, f"expected true/false (or yes/no, 1/0, in stock/out of stock), found {value!r}")


def _plain(value: Any, column: str) -> Any:
    """A JSON-friendly copy of an attribute value (Parquet can hold dates, decimals, bytes...).

    Infinite numbers are refused (JSON, the store's payload format, cannot hold them); NaN inside a list or object
    becomes null.
    """
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return None
        raise _FieldError(column, f"expected a finite number, found {value!r}")
    if isinstance(value, (str, int, float, bool)):
        return normalise_text(value) if isinstance(value, str) else value
    if isinstance(value, (list, tuple)):
        return [_plain(v, column) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, column) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
