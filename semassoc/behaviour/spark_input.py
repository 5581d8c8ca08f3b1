"""Spark input for the events loader: the session, file formats and listings, and the column conversions that
mirror the local reader's (text ids, ISO 8601 times, numbers).

PySpark is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from semassoc.errors import EngineUnavailable, InvalidInput
from semassoc.tables import _FORMATS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = ["SparkSettings", "spark_session"]

_CORRUPT = "_corrupt_record"
_TRIM = r"^\p{IsWhite_Space}+|\p{IsWhite_Space}+$"
# Text the local engine parses as a time (ISO 8601 date, optional time, fraction and offset); Spark's cast is more
# lenient (e.g. 2024-1-1), so values outside this shape are flagged as bad timestamps, as locally.
_ISO_TIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$"
# Text Python's float() reads (the local engine's fallback); Spark's cast would also accept e.g. "1d".
_NUMBER = r"(?i)^[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|inf|infinity|nan)$"


@dataclass(frozen=True)
class SparkSettings:
    """How to reach Spark.

    Attributes:
        master: ``local[*]`` (default: this machine, every core), ``local[2]``, ``yarn``, ``k8s://https://...``,
            ``spark://host:7077``. Ignored when a Spark session is already active (``spark-submit``, Databricks):
            the active session is used as it is.
        conf: Spark properties passed through, e.g. ``{"spark.executor.memory": "8g"}``.
        app_name: the application name shown in the Spark UI.
    """

    master: str = "local[*]"
    conf: Mapping[str, str] = field(default_factory=dict)
    app_name: str = "semassoc"


def spark_session(settings: SparkSettings | None = None) -> SparkSession:
    """The active Spark session, or a new one from ``settings``; its SQL time zone is set to UTC.

    Raises:
        EngineUnavailable: PySpark is not installed, Java is missing, or Spark does not start.
    """
    settings = settings or SparkSettings()
    try:
        from py4j.protocol import Py4JError
        from pyspark.sql import SparkSession
    except ImportError:
        raise EngineUnavailable(
            "the Spark engine needs PySpark: pip install 'semassoc[spark]' (PySpark 4.x with Java 17 or later)"
        ) from None
    session = SparkSession.getActiveSession()
    if session is None:
        if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
            raise EngineUnavailable("the Spark engine needs Java 17 or later: install a JDK or set JAVA_HOME")
        builder = SparkSession.builder.appName(settings.app_name).master(settings.master)
        for key, value in settings.conf.items():
            builder = builder.config(key, str(value))
        try:
            session = builder.getOrCreate()
        except (RuntimeError, OSError, Py4JError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineUnavailable(f"Spark did not start (master {settings.master!r}): {first}") from None
    # Times without an offset are taken as they are (UTC), as in the local engine.
    session.conf.set("spark.sql.session.timeZone", "UTC")
    return session


# ----------------------------------------------------------------------------------------------------- inputs


def _format_of(spec: str) -> str:
    """csv, jsonl or parquet from the name (``x.parquet``, ``*.csv.gz``) or, for a local directory, its files."""

    def by_name(name: str) -> str | None:
        lower = name.lower()
        if lower.endswith(".gz"):
            lower = lower[:-3]
        return _FORMATS.get(os.path.splitext(lower)[1])

    found = by_name(spec.rstrip("/"))
    if found:
        return found
    local = _local_path(spec)
    if local is not None and local.is_dir():
        for root, dirs, files in os.walk(local):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            for name in sorted(files):
                if not name.startswith((".", "_")) and by_name(name):
                    return by_name(name)  # type: ignore[return-value]
            del root
    raise InvalidInput(
        f"{spec}: cannot tell the events format; name the files .parquet, .csv, .tsv or .jsonl "
        f"(a directory is read by the type of the files inside, a glob by its suffix)"
    )


def _local_path(spec: str) -> Path | None:
    if spec.startswith("file:"):
        return Path(re.sub(r"^file:(//)?", "", spec))
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", spec):
        return None
    return Path(spec)


def _check_exists(spec: str) -> None:
    local = _local_path(spec)
    if local is None:
        return  # remote storage: Spark reports a missing path itself
    if any(ch in spec for ch in "*?[{"):
        if not glob.glob(str(local)):
            raise InvalidInput(f"{spec}: no events file matches")
    elif not local.exists():
        raise InvalidInput(f"{spec}: events file not found")


def _digest(spec: str, frame: DataFrame) -> str:
    """A plain local file: its sha256, as the local engine computes it (a file is never counted twice by either
    engine). A directory or glob: sha256 of its sorted file listing (names, and sizes where the driver sees them):
    the same directory is refused a second time; a copied file under another name is not detected."""
    from semassoc.behaviour.events import file_sha256

    local = _local_path(spec)
    if local is not None and local.is_file():
        return file_sha256(local)
    lines = []
    for uri in sorted(frame.inputFiles()):
        path = _local_path(uri)
        size = path.stat().st_size if path is not None and path.is_file() else ""
        lines.append(f"{uri}\t{size}")
    return "listing:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _read(spark: SparkSession, spec: str, kind: str, delimiter: str | None = None) -> DataFrame:
    from pyspark.sql import types as T

    reader = spark.read.option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", _CORRUPT)
    if kind == "parquet":
        return reader.parquet(spec)
    if kind == "jsonl":
        return reader.json(spec)
    # As the local reader: every field is text and only an empty field is missing (NA, NULL, nan are ids).
    sep = delimiter or _delimiter_of(spec)
    csv = reader.option("header", True).option("sep", sep).option("escape", '"')
    header = csv.option("inferSchema", False).csv(spec).columns
    schema = T.StructType([T.StructField(name, T.StringType()) for name in header])
    return csv.schema(schema.add(T.StructField(_CORRUPT, T.StringType()))).csv(spec)


def _delimiter_of(spec: str) -> str:
    """The local reader's delimiter detection on the first local file; "," (tab for .tsv) for remote files."""
    from semassoc.tables import _detect_delimiter

    local = _local_path(spec)
    first: Path | None = None
    if local is not None:
        if local.is_file():
            first = local
        elif local.is_dir():
            first = next(
                (p for p in sorted(local.rglob("*")) if p.is_file() and not p.name.startswith((".", "_"))), None
            )
        else:
            first = next((Path(p) for p in sorted(glob.glob(str(local))) if Path(p).is_file()), None)
    if first is None:
        return "\t" if ".tsv" in spec.lower() else ","
    return _detect_delimiter(first)


# -------------------------------------------------------------------------------------------------- conversion


def _text(frame: DataFrame, name: str, strip: bool) -> Column:
    """The local ``_as_text``: text as is, integral floats without ".0", anything else cast to text."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    column = F.col(_quoted(name))
    dtype = frame.schema[name].dataType
    if isinstance(dtype, T.StringType):
        text = column
    elif isinstance(dtype, (T.DoubleType, T.FloatType)):
        as_long = column.try_cast("long")
        text = F.when(as_long.cast(dtype) == column, as_long.cast("string")).otherwise(column.cast("string"))
    else:
        text = column.cast("string")
    return F.regexp_replace(text, _TRIM, "") if strip else text


def _empty(text: Column) -> Column:
    from pyspark.sql import functions as F

    return text.isNull() | (F.length(text) == 0)


def _timestamp(frame: DataFrame, name: str) -> tuple[Column, Column]:
    """Microseconds since the epoch (UTC; null where unknown) and a flag for present values that are not times."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    column = F.col(_quoted(name))
    dtype = frame.schema[name].dataType
    no = F.lit(False)
    if isinstance(dtype, T.TimestampType):
        return F.unix_micros(column), no
    if isinstance(dtype, (T.TimestampNTZType, T.DateType)):
        return F.unix_micros(column.cast("timestamp")), no
    if isinstance(dtype, T.NumericType):
        seconds = column.cast("double")
        # As the local reader: NaN is missing; infinite or beyond datetime64[us] (about 292,000 years) is bad.
        present = seconds.isNotNull() & ~F.isnan(seconds)
        ok = present & (F.abs(seconds) < 9e12)
        return F.when(ok, F.bround(seconds * 1_000_000).cast("long")), present & ~ok
    text = F.regexp_replace(column.cast("string"), _TRIM, "")
    text = F.when(F.length(text) > 0, text)
    parsed = F.when(text.rlike(_ISO_TIME), F.unix_micros(text.try_cast("timestamp")))
    return parsed, text.isNotNull() & parsed.isNull()


def _number(frame: DataFrame, name: str) -> tuple[Column, Column]:
    """Float value (null where missing) and a flag for present values that are not numbers."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    column = F.col(_quoted(name))
    dtype = frame.schema[name].dataType
    if isinstance(dtype, (T.NumericType, T.BooleanType)):
        value = column.cast("double")
        return value, F.coalesce(F.abs(value) == float("inf"), F.lit(False))
    text = F.regexp_replace(column.cast("string"), _TRIM, "")
    text = F.when(F.length(text) > 0, text)
    value = F.when(text.rlike(_NUMBER), text.try_cast("double"))
    return value, (text.isNotNull() & value.isNull()) | F.coalesce(F.abs(value) == float("inf"), F.lit(False))
