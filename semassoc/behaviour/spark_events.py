"""Events on Apache Spark: read, validate, filter and group rows into baskets with the local engine's rules.

``load_events_spark`` is the Spark twin of :func:`semassoc.behaviour.events.load_events`. It takes what a data team
has: Parquet files, directories (Hive-style partitions such as ``dt=2024-06-01/`` are read as columns), globs, CSV/TSV
and JSON lines; it detects columns with the same :class:`EventColumns` rules, flags the same bad rows with the same
reasons, applies the same :class:`EventFilters`, cuts sessions, weights and decays events as the local engine does.
Its result stays in Spark (a DataFrame of kept rows) plus the counts the reports need.

Bad rows are counted by Spark. The first problems are described with the file, the row and the field: for Parquet
from Spark's own row index; for CSV and JSON lines (whose line numbers Spark does not track) the local reader re-reads
the offending file on the driver, which gives exactly the local engine's row numbers and messages. A file the driver
cannot open (remote storage) is described by file and field only.

PySpark is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semassoc.behaviour.events import (
    _MAX_PROBLEMS,
    CUSTOM_EVENT_WEIGHT,
    DEFAULT_EVENT_TYPE,
    DEFAULT_EVENT_WEIGHTS,
    EventColumns,
    LoadOptions,
    SkipSummary,
    _strict_message,
    load_events,
)
from semassoc.behaviour.spark_input import (
    _CORRUPT,
    SparkSettings,
    _check_exists,
    _digest,
    _empty,
    _format_of,
    _local_path,
    _number,
    _quoted,
    _read,
    _text,
    _timestamp,
    spark_session,
)
from semassoc.errors import InvalidInput, RowProblem

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = ["SparkEvents", "SparkSettings", "load_events_spark", "spark_session"]

# Order in which the local engine checks the fields of a row (problems of one row are listed in this order).
_FIELD_ORDER = ("item", "basket", "user", "bad_ts", "missing_ts", "quantity", "event_type")


@dataclass(eq=False)
class SparkEvents:
    """Validated events of one load (a file, directory or glob), kept in Spark.

    ``rows`` has the columns ``item``, ``basket`` (basket id or session key ``"<user>@<start>"``), ``event_type``,
    ``weight`` and, when the input has them, ``user`` and ``ts`` (microseconds since the epoch, UTC). The other
    attributes mirror :class:`~semassoc.behaviour.events.Events` for reports: ``sources``, ``digests``,
    ``rows_read``, ``skipped``, ``filtered``, and ``len()`` (rows kept).
    """

    rows: DataFrame
    has_user: bool
    has_timestamp: bool
    sources: tuple[str, ...]
    digests: tuple[str, ...]
    rows_read: int
    rows_used: int
    skipped: SkipSummary
    filtered: Mapping[str, int]
    _cached: list[DataFrame] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return self.rows_used

    @property
    def user(self) -> object | None:
        """Not ``None`` when rows carry a user (the local ``Events.user`` test used by the API)."""
        return True if self.has_user else None

    def release(self) -> None:
        """Drop what Spark cached for this load."""
        for frame in self._cached:
            frame.unpersist()
        self._cached.clear()


# -------------------------------------------------------------------------------------------------------- load


def load_events_spark(
    spark: SparkSession, paths: str | Sequence[str], options: LoadOptions | None = None
) -> list[SparkEvents]:
    """Read, validate and filter events with Spark, one :class:`SparkEvents` per path (file, directory or glob).

    Each path is one load, as one file is for the local engine: sessions are cut within a load, the decay
    reference is the latest event of the load, and the strict policy stops at the first load with a bad row.

    Args:
        spark: the session (see :func:`spark_session`).
        paths: Parquet/CSV/TSV/JSON-lines files, directories (Hive partitions become columns) or globs.
        options: the local engine's :class:`LoadOptions` (columns, session gap, weights, half-life, filters,
            on_error).

    Raises:
        InvalidInput: a path is missing or of unknown format, a needed column is missing, or (strict) a bad row.
    """
    options = options or LoadOptions()
    specs = [paths] if isinstance(paths, str) else [str(p) for p in paths]
    if not specs:
        raise InvalidInput("no events file given")
    if options.on_error not in ("strict", "skip"):
        raise InvalidInput(f"on_error must be 'strict' or 'skip', not {options.on_error!r}")
    if options.session_gap_minutes <= 0:
        raise InvalidInput("session_gap must be positive")
    if options.half_life_days is not None and options.half_life_days <= 0:
        raise InvalidInput("half_life must be positive")
    loads = []
    for spec in specs:
        loads.append(_load_one(spark, spec, options))
    return loads


def _load_one(spark: SparkSession, spec: str, options: LoadOptions) -> SparkEvents:
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    _check_exists(spec)
    kind = _format_of(spec)
    raw = _read(spark, spec, kind, options.delimiter)
    names = [n for n in raw.columns if n != _CORRUPT]
    cols = options.columns.resolve(names, spec)
    item = cols.check_usable(spec, names, time_decay=options.half_life_days is not None)
    weights = dict(DEFAULT_EVENT_WEIGHTS if options.weights is None else options.weights)
    for name, value in weights.items():
        if not (isinstance(value, int | float) and value == value and abs(value) != float("inf") and value >= 0):
            raise InvalidInput(f"weight of event type {name!r} must be a finite number >= 0, not {value!r}")

    corrupt = F.col(_CORRUPT).isNotNull() if _CORRUPT in raw.columns else F.lit(False)
    ok = ~corrupt
    meta = [F.col("_metadata.file_path").alias("_file")]
    if kind == "parquet":
        meta.append(F.col("_metadata.row_index").alias("_row"))
    out: dict[str, Column] = {"item": _text(raw, item, True)}
    flags: dict[str, Column] = {"item": ok & _empty(out["item"])}
    if cols.basket is not None:
        out["basket"] = _text(raw, cols.basket, True)
        flags["basket"] = ok & _empty(out["basket"])
    if cols.user is not None:
        out["user"] = _text(raw, cols.user, True)
        if cols.basket is None:
            flags["user"] = ok & _empty(out["user"])
    if cols.timestamp is not None:
        out["ts"], bad_ts = _timestamp(raw, cols.timestamp)
        flags["bad_ts"] = ok & bad_ts
        # As the local reader: a timestamp column must hold a time on every row.
        flags["missing_ts"] = ok & out["ts"].isNull() & ~bad_ts
    if cols.quantity is not None:
        out["quantity"], bad_q = _number(raw, cols.quantity)
        flags["quantity"] = ok & bad_q
    if cols.event_type is not None:
        out["event_type"] = F.lower(_text(raw, cols.event_type, True))
        flags["event_type"] = ok & _empty(out["event_type"])
    raw_values = {
        "bad_ts": F.col(_quoted(cols.timestamp)).cast("string") if cols.timestamp else None,
        "quantity": F.col(_quoted(cols.quantity)).cast("string") if cols.quantity else None,
    }
    checked = [
        corrupt.alias("_corrupt"),
        *[c.alias(k) for k, c in out.items()],
        *[c.alias(f"_bad_{k}") for k, c in flags.items()],
    ]
    bad = F.col("_corrupt")
    for k in flags:
        bad = bad | F.col(f"_bad_{k}")
    # What is cached holds only the checked columns; file names, row indexes and raw values are read again only
    # when bad rows must be described.
    parsed = raw.select(*checked).withColumn("_bad", bad)
    described = raw.select(
        *meta, *checked, *[c.alias(f"_raw_{k}") for k, c in raw_values.items() if c is not None]
    ).withColumn("_bad", bad)

    # Filters, in the local order, on rows that passed validation; each row counts under its first reason.
    filters = options.filters
    steps: list[tuple[str, Column]] = []
    if cols.quantity is not None and filters.drop_nonpositive_quantity:
        steps.append(("quantity <= 0", F.coalesce(F.col("quantity") <= 0, F.lit(False))))
    if cols.basket is not None and filters.cancellation_prefix:
        steps.append(
            ("cancellation", F.coalesce(F.col("basket").startswith(filters.cancellation_prefix), F.lit(False)))
        )
    if filters.excluded_items:
        listed = F.col("item").isin(sorted(filters.excluded_items))
        steps.append(("non-product code", F.coalesce(listed, F.lit(False))))
    if filters.excluded_item_pattern:
        try:
            re.compile(filters.excluded_item_pattern)
        except re.error as exc:
            raise InvalidInput(f"bad excluded_item_pattern {filters.excluded_item_pattern!r}: {exc}") from None
        matched = F.col("item").rlike(filters.excluded_item_pattern)
        steps.append(("non-product code", F.coalesce(matched, F.lit(False))))
    reason = F.lit(None).cast("string")
    for name, hit in reversed(steps):
        reason = F.when(hit, F.lit(name)).otherwise(reason)
    parsed = parsed.withColumn("_filtered", F.when(~F.col("_bad"), reason))
    parsed = parsed.persist(StorageLevel.MEMORY_AND_DISK)

    sums = [F.count(F.lit(1)).alias("rows"), F.sum(F.col("_bad").cast("long")).alias("bad")]
    sums.append(F.sum(F.col("_corrupt").cast("long")).alias("corrupt"))
    sums += [F.sum(F.col(f"_bad_{k}").cast("long")).alias(f"n_{k}") for k in flags]
    filter_names = list(dict.fromkeys(name for name, _ in steps))
    sums += [F.sum((F.col("_filtered") == name).cast("long")).alias(f"f_{i}") for i, name in enumerate(filter_names)]
    totals = parsed.agg(*sums).collect()[0].asDict()
    rows_read = int(totals["rows"])
    bad_count = int(totals["bad"] or 0)
    labels = {
        "item": (cols.item, "empty product id"),
        "basket": (cols.basket, "empty basket id"),
        "user": (cols.user, "empty user id"),
        "bad_ts": (cols.timestamp, "bad timestamp"),
        "missing_ts": (cols.timestamp, "missing timestamp"),
        "quantity": (cols.quantity, "bad quantity"),
        "event_type": (cols.event_type, "empty event type"),
    }
    reasons: dict[str, int] = {}
    if totals["corrupt"]:
        reasons["row: " + ("wrong number of fields" if kind == "csv" else "not valid JSON")] = int(totals["corrupt"])
    for k in flags:
        if totals[f"n_{k}"]:
            column, text = labels[k]
            reasons[f"{column}: {text}"] = int(totals[f"n_{k}"])
    problems: list[RowProblem] = []
    if bad_count:
        problems = _describe(described, spec, kind, cols, flags, labels, options)
        if options.on_error == "strict":
            parsed.unpersist()
            raise InvalidInput(_strict_message(problems[0], bad_count))
    filtered: dict[str, int] = {}
    for i, name in enumerate(filter_names):
        if totals[f"f_{i}"]:
            filtered[name] = int(totals[f"f_{i}"])

    kept = parsed.where(~F.col("_bad") & F.col("_filtered").isNull())
    if cols.basket is None:
        from datetime import timedelta

        gap_us = int(_gap(options) / timedelta(microseconds=1))
        order = Window.partitionBy("user").orderBy("ts")
        previous = F.lag("ts").over(order)
        starts = F.when(previous.isNull() | ((F.col("ts") - previous) > gap_us), F.col("ts"))
        running = order.rowsBetween(Window.unboundedPreceding, Window.currentRow)
        kept = kept.withColumn("_start", starts).withColumn("_start", F.last("_start", ignorenulls=True).over(running))
        start_text = F.date_format(F.timestamp_micros("_start"), "yyyy-MM-dd'T'HH:mm:ss.SSSSSS")
        kept = kept.withColumn("basket", F.concat(F.col("user"), F.lit("@"), start_text))
    if cols.event_type is None:
        kept = kept.withColumn("event_type", F.lit(DEFAULT_EVENT_TYPE))
    weight = F.lit(float(CUSTOM_EVENT_WEIGHT))
    for name, value in weights.items():
        weight = F.when(F.col("event_type") == F.lit(name), F.lit(float(value))).otherwise(weight)
    kept = kept.withColumn("weight", weight)
    if options.half_life_days is not None:
        reference = kept.agg(F.max("ts")).collect()[0][0]
        if reference is not None:
            half_life_us = options.half_life_days * 86_400 * 1_000_000.0
            age = (F.lit(int(reference)) - F.col("ts")).cast("double") / F.lit(half_life_us)
            kept = kept.withColumn("weight", F.col("weight") * F.pow(F.lit(0.5), age))
    keep_columns = ["item", "basket", "event_type", "weight"]
    if cols.user is not None:
        keep_columns.append("user")
    if cols.timestamp is not None:
        keep_columns.append("ts")
    rows_used = rows_read - bad_count - sum(filtered.values())
    return SparkEvents(
        rows=kept.select(*keep_columns),
        has_user=cols.user is not None,
        has_timestamp=cols.timestamp is not None,
        sources=(spec,),
        digests=(_digest(spec, raw),),
        rows_read=rows_read,
        rows_used=rows_used,
        skipped=SkipSummary(rows=bad_count, reasons=reasons, problems=tuple(problems[:_MAX_PROBLEMS])),
        filtered=filtered,
        _cached=[parsed],
    )


def _describe(
    parsed: DataFrame,
    spec: str,
    kind: str,
    cols: EventColumns,
    flags: Mapping[str, Any],
    labels: Mapping[str, tuple[str | None, str]],
    options: LoadOptions,
) -> list[RowProblem]:
    """The first problems, in file and row order, worded as the local engine words them."""
    from pyspark.sql import functions as F

    bad = parsed.where(F.col("_bad"))
    single = _local_path(spec)
    single_file = single is not None and single.is_file()

    def shown(uri: str) -> str:
        if single_file:
            return spec
        local = _local_path(uri)
        return str(local) if local is not None else uri

    if kind == "parquet":
        first = bad.orderBy("_file", "_row").limit(_MAX_PROBLEMS).collect()
        problems = []
        for row in first:
            for k in _FIELD_ORDER:
                if k in flags and row[f"_bad_{k}"]:
                    column, text = labels[k]
                    raw = row[f"_raw_{k}"] if f"_raw_{k}" in row.asDict() else None
                    message = f"{text} {raw!r}" if k in ("bad_ts", "quantity") else text
                    problems.append(RowProblem(shown(row["_file"]), int(row["_row"]) + 1, str(column), message))
        return problems
    # CSV / JSON lines: the local reader re-reads the offending files for exact row numbers and messages.
    problems = []
    files = [r["_file"] for r in bad.select("_file").distinct().orderBy("_file").limit(_MAX_PROBLEMS).collect()]
    explicit = EventColumns(
        **{f: getattr(cols, f) for f in ("item", "basket", "user", "timestamp", "event_type", "quantity")}
    )
    for uri in files:
        local = Path(spec) if single_file else _local_path(uri)
        found: list[RowProblem] = []
        if local is not None and local.is_file():
            try:
                found = list(
                    load_events(
                        local,
                        _present(explicit, local, options),
                        session_gap=_gap(options),
                        weights=options.weights,
                        half_life=_half_life(options),
                        filters=options.filters,
                        on_error="skip",
                        delimiter=options.delimiter,
                    ).skipped.problems
                )
            except InvalidInput:
                found = []
        if not found:
            found = [RowProblem(shown(uri), None, "row", "bad rows (see the reasons); this file cannot be re-read")]
        problems += [replace(p, file=shown(uri)) for p in found]
        if len(problems) >= _MAX_PROBLEMS:
            break
    return problems


def _present(columns: EventColumns, path: Path, options: LoadOptions) -> EventColumns:
    """The explicit columns, less those this one file lacks (a partition column, or a field absent from it)."""
    from semassoc.tables import read_table

    header = set(read_table(path, delimiter=options.delimiter).columns)
    return EventColumns(**{k: (v if v in header else None) for k, v in columns.__dict__.items()})


def _gap(options: LoadOptions) -> Any:
    from datetime import timedelta

    return timedelta(minutes=options.session_gap_minutes)


def _half_life(options: LoadOptions) -> Any:
    from datetime import timedelta

    return None if options.half_life_days is None else timedelta(days=options.half_life_days)
