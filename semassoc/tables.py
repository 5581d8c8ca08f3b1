"""One reader for the tabular files users give semassoc: catalogs and events alike.

Formats come from the file name: ``.csv``/``.tsv``/``.txt``, ``.jsonl``/``.ndjson``/``.json`` (one JSON object per
line) and ``.parquet``/``.pq``, each optionally gzipped (``.csv.gz``...). What every reader promises:

- **Rows are numbered as people see them**: CSV counts lines with the header as row 1 (a record spanning lines is
  numbered by its first line), JSON lines counts lines from 1, Parquet counts data rows from 1. Blank lines are not
  rows but still count.
- **A row that cannot be read is a problem of that row only** (``TableRead.bad_rows``, naming the file, the row and
  the field): invalid UTF-8, a lone surrogate, a wrong number of fields, a line that is not a JSON object, a number
  JSON cannot hold (``NaN``, ``Infinity``, ``1e999``). The rows around it are read normally.
- **CSV**: fields of any length (long HTML descriptions are legal); the delimiter is ``,``, ``;``, tab or ``|``,
  detected from the first lines unless given; only an empty field is missing (``NA``, ``NULL``, ``nan`` are text:
  ids are never lost; in a numeric field they are bad values, as in the Spark engine).
- **JSON lines**: the columns are the keys of *all* lines, in order of first appearance.

Two ways to read: ``exact=True`` reads row by row in Python and records each row's number; for CSV the default
first tries pyarrow's native reader (about 10x faster on big event files) and falls back to the exact reader when the
file has anything unusual. JSON lines are always read line by line (pyarrow's JSON reader crashed on a fuzzed
input). A fast read knows no row numbers: consumers re-validate on :meth:`TableRead.exact` when they must name a row.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from semassoc.errors import InvalidInput, RowProblem

if TYPE_CHECKING:
    import pyarrow as pa

#: Delimiters tried, in order of preference, when none is given.
DELIMITERS = (",", ";", "\t", "|")
_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
# Python's csv module refuses fields over 128 KiB by default; a product description may be longer.
csv.field_size_limit(2**31 - 1)
_SURROGATE = re.compile("[\ud800-\udfff]")
_SAMPLE_BYTES = 1 << 16
_SNIPPET = 60


@dataclass(frozen=True)
class BadRow:
    """A row the reader could not read: where and what (``problem``), and a short reason to count it under."""

    problem: RowProblem
    reason: str


@dataclass
class TableRead:
    """What :func:`read_table` read: the readable rows as one table, and the rows it could not read.

    Attributes:
        source: the file name used in messages.
        kind: ``"csv"``, ``"jsonl"`` or ``"parquet"``.
        columns: column names, in file order (for JSON lines: every key of every line, in order of first appearance).
        bad_rows: rows that could not be read, in file order; they are not in the table.
        exact_numbers: ``True`` when every table row knows its row number (exact reads and Parquet).
    """

    source: str
    kind: str
    columns: list[str]
    bad_rows: list[BadRow] = field(default_factory=list)
    exact_numbers: bool = True
    _path: Path | None = None
    _delimiter: str | None = None
    _quote_rows: bool = True
    _table: pa.Table | None = None
    _records: list[dict[str, Any]] | None = None  # exact JSON lines: the objects as parsed
    _values: dict[str, list[Any]] | None = None  # exact CSV: one list of strings per column
    _numbers: list[int] | None = None

    @property
    def num_rows(self) -> int:
        """Readable rows (the table's length)."""
        if self._table is not None:
            return int(self._table.num_rows)
        if self._records is not None:
            return len(self._records)
        return len(self._numbers or [])

    @property
    def rows_read(self) -> int:
        """Every row of the file: readable ones and bad ones."""
        return self.num_rows + len(self.bad_rows)

    @property
    def table(self) -> pa.Table:
        """The readable rows as a pyarrow table (CSV columns are text; JSON columns keep their type when it is
        the same on every line, else become text with objects and arrays as JSON)."""
        if self._table is None:
            import pyarrow as pa

            if self._values is not None:
                # An empty field is missing (null), as in the fast reader.
                self._table = pa.table(
                    {name: pa.array([v or None for v in self._values[name]], pa.string()) for name in self.columns}
                )
            else:
                records = self._records or []
                self._table = pa.table({name: _json_column([r.get(name) for r in records]) for name in self.columns})
        return self._table

    def row_number(self, index: int) -> int:
        """The row number people see for the ``index``-th table row (0-based); exact reads only."""
        if self.kind == "parquet":
            return index + 1
        if self._numbers is None:
            raise RuntimeError("row numbers of a fast read: call exact() first")  # a bug, not a user error
        return self._numbers[index]

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Each readable row as ``(row number, {column: value})``; JSON lines give the objects as parsed."""
        if not self.exact_numbers:
            yield from self.exact().rows()
            return
        if self._records is not None:
            yield from zip(self._numbers or [], self._records, strict=True)
            return
        if self._values is not None:
            columns = [self._values[name] for name in self.columns]
            for i, number in enumerate(self._numbers or []):
                yield number, {name: column[i] for name, column in zip(self.columns, columns, strict=True)}
            return
        number = 0
        for batch in self.table.to_batches(max_chunksize=65_536):
            for record in batch.to_pylist():
                number += 1
                yield number, record

    def exact(self) -> TableRead:
        """This file read row by row, with every row's number (itself when it already is one)."""
        if self.exact_numbers or self._path is None:
            return self
        return read_table(self._path, delimiter=self._delimiter, exact=True, quote_rows=self._quote_rows)


def table_kind(path: Path) -> str:
    """``"csv"``, ``"jsonl"`` or ``"parquet"`` from the file name (a trailing ``.gz`` is looked through).

    Raises:
        InvalidInput: the name does not say.
    """
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    kind = _FORMATS.get(suffixes[-1] if suffixes else "")
    if kind is None:
        raise InvalidInput(
            f"{path}: cannot tell the format from the name; use .csv, .tsv, .jsonl, .ndjson or .parquet "
            "(each may end in .gz)"
        )
    return kind


def read_table(
    path: str | Path, *, delimiter: str | None = None, exact: bool = False, quote_rows: bool = True
) -> TableRead:
    """Read a catalog or events file into a table, setting aside the rows that cannot be read.

    Args:
        path: the file; its name gives the format (see the module docstring).
        delimiter: CSV delimiter; ``None`` detects ``,``, ``;``, tab or ``|`` from the first lines (``.tsv``
            files default to tab).
        exact: read row by row so that every row knows its number (see :meth:`TableRead.exact`).
        quote_rows: quote the text of a malformed row in its problem (off for pseudonymised user ids).

    Returns:
        TableRead with the readable rows and the bad ones.

    Raises:
        InvalidInput: the file is missing, not a file of that format, empty, or its header cannot be read.

    Example:
        >>> read = read_table("examples/online_retail/catalog.csv", exact=True)  # doctest: +SKIP
        >>> read.columns[:2], read.num_rows  # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"{path}: file not found")
    if not path.is_file():
        raise InvalidInput(f"{path}: not a file")
    kind = table_kind(path)
    if delimiter is not None and (len(delimiter) != 1 or delimiter in "\r\n\"'"):
        raise InvalidInput(f"delimiter must be one character (not a quote or line break), not {delimiter!r}")
    try:
        if kind == "parquet":
            return _read_parquet(path)
        if kind == "jsonl":
            # Always read line by line: pyarrow's JSON reader crashed the process (SIGSEGV) on one generated input in
            # the fuzz suite, truncates keys at NUL and accepts invalid UTF-8, so it is not used on user files.
            return _exact_jsonl(path)
        chosen = delimiter or _detect_delimiter(path)
        return (None if exact else _fast_csv(path, chosen, quote_rows)) or _exact_csv(path, chosen, quote_rows)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InvalidInput(f"{path}: not a readable gzip file: {_one_line(str(exc))}") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read the file: {_one_line(str(exc.strerror or exc))}") from None


# ---------------------------------------------------------------------------------------------------------------- CSV


def _open_bytes(path: Path) -> IO[bytes]:
    if path.suffix.lower() == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))  # a GzipFile is a binary file; typeshed does not say IO[bytes]
    return path.open("rb")


def _open_text(path: Path) -> IO[str]:
    """Text with undecodable bytes kept as lone surrogates (U+DC80..U+DCFF), so a bad byte spoils only its row."""
    return io.TextIOWrapper(_open_bytes(path), encoding="utf-8-sig", errors="surrogateescape", newline="")


def _detect_delimiter(path: Path) -> str:
    """The candidate that splits the header and the first complete lines into the same number (> 1) of fields."""
    default = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
    with _open_text(path) as handle:
        sample = handle.read(_SAMPLE_BYTES)
        complete = len(sample) < _SAMPLE_BYTES
    if not complete and "\n" in sample:
        sample = sample[: sample.rindex("\n") + 1]  # whole lines only (the last record may still be cut short)
    best, best_width = default, 1
    for candidate in (default, *(d for d in DELIMITERS if d != default)):
        try:
            records = [r for r in csv.reader(io.StringIO(sample), delimiter=candidate) if r]
        except csv.Error:
            continue
        if not records:
            continue
        if not complete and len(records) > 1:
            records = records[:-1]
        width = len(records[0])
        if width > best_width and all(len(r) == width for r in records):
            best, best_width = candidate, width
    if best_width == 1 and sample:
        first_line = sample.splitlines()[0] if sample.splitlines() else ""
        if any(d in first_line for d in DELIMITERS if d != best):
            raise InvalidInput(
                f"{path}: row 1, field 'row': cannot tell the delimiter (the header reads as one column "
                f"{_snippet(first_line)}); name it with --delimiter"
            )
    return best


def _header(path: Path, values: list[str] | None) -> list[str]:
    if values is None:
        raise InvalidInput(f"{path}: empty file (no header row)")
    header = [v.strip() for v in values]
    bad = next((v for v in header if _SURROGATE.search(v)), None)
    if bad is not None:
        raise InvalidInput(f"{path}: row 1, field 'row': the header is not valid UTF-8 text: {_snippet(bad)}")
    if len(set(header)) != len(header):
        duplicates = sorted({h for h in header if header.count(h) > 1})
        raise InvalidInput(f"{path}: row 1, field 'row': duplicate column name(s) {duplicates}")
    return header


def _csv_header(path: Path, reader: Iterator[list[str]]) -> list[str]:
    """The checked header: the first record of ``reader``."""
    try:
        return _header(path, next(reader, None))
    except csv.Error as exc:
        raise InvalidInput(f"{path}: row 1, field 'row': unreadable header: {exc}") from None


def _exact_csv(path: Path, delimiter: str, quote_rows: bool = True) -> TableRead:
    source = str(path)
    with _open_text(path) as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = _csv_header(path, reader)
        width = len(header)
        values: list[list[str]] = [[] for _ in header]
        numbers: list[int] = []
        bad: list[BadRow] = []
        line = reader.line_num
        while True:
            start = line + 1
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                line = reader.line_num
                bad.append(BadRow(RowProblem(source, start, "row", f"unreadable row: {exc}"), "unreadable row"))
                continue
            line = reader.line_num
            if not record or (len(record) == 1 and not record[0].strip() and width > 1):
                continue  # blank lines are not rows
            if len(record) != width:
                message = f"expected {width} fields, found {len(record)}"
                if quote_rows:
                    message += f": {_snippet(delimiter.join(record))}"
                bad.append(BadRow(RowProblem(source, start, "row", message), "wrong number of fields"))
                continue
            problem = _text_problem(record, header)
            if problem is not None:
                bad.append(BadRow(RowProblem(source, start, *problem), problem[1].split(" (")[0]))
                continue
            numbers.append(start)
            for column, value in zip(values, record, strict=True):
                column.append(value)
    return TableRead(
        source,
        "csv",
        header,
        bad,
        True,
        _path=path,
        _delimiter=delimiter,
        _values=dict(zip(header, values, strict=True)),
        _numbers=numbers,
    )


def _fast_csv(path: Path, delimiter: str, quote_rows: bool = True) -> TableRead | None:
    """pyarrow's CSV reader (every column as text), or ``None`` when the exact reader must do it."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with _open_text(path) as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = _csv_header(path, reader)
        if reader.line_num != 1:
            return None  # a header spanning lines: pyarrow's skip_rows counts lines, not records
    try:
        table = pacsv.read_csv(
            pa.input_stream(str(path), compression="detect"),
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, block_size=1 << 24),
            # No invalid_row_handler: pyarrow calls it with undecodable text and prints "Exception ignored" on
            # stderr; a malformed row raises instead and the exact reader names it.
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=True,
                null_values=[""],  # NA, NULL, nan... are ids like any other
                quoted_strings_can_be_null=True,  # "" and an empty field alike, as Python's csv reads them
            ),
        )
    except (pa.ArrowException, OSError):
        return None  # invalid UTF-8, a record longer than a block, odd quoting, a bad archive: the exact reader says
    return TableRead(
        str(path), "csv", header, [], False, _path=path, _delimiter=delimiter, _quote_rows=quote_rows, _table=table
    )


# ------------------------------------------------------------------------------------------------------ JSON lines


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return value


# One decoder (json.loads with hooks would build one per line): NaN/Infinity and out-of-range numbers are refused.
_JSON = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _exact_jsonl(path: Path) -> TableRead:
    source = str(path)
    columns: dict[str, None] = {}
    records: list[dict[str, Any]] = []
    numbers: list[int] = []
    bad: list[BadRow] = []
    last_keys: Any = None
    with _open_bytes(path) as raw:
        for number, line_bytes in enumerate(raw, start=1):
            if not line_bytes.strip():
                continue
            if number == 1 and line_bytes.startswith(b"\xef\xbb\xbf"):
                line_bytes = line_bytes[3:]
            try:
                line, undecodable = line_bytes.decode("utf-8"), False
            except UnicodeDecodeError:  # kept, with the bad bytes as lone surrogates, to name the field
                line, undecodable = line_bytes.decode("utf-8", errors="surrogateescape"), True
            try:
                value = _JSON.decode(line)
            except ValueError as exc:
                message = getattr(exc, "msg", None) or str(exc)
                bad.append(BadRow(RowProblem(source, number, "row", f"not valid JSON ({message})"), "not valid JSON"))
                continue
            if not isinstance(value, dict):
                message = f"expected a JSON object, found {type(value).__name__}"
                bad.append(BadRow(RowProblem(source, number, "row", message), "not a JSON object"))
                continue
            problem = _json_text_problem(value) if undecodable or "\\u" in line else None
            if problem is not None:
                bad.append(BadRow(RowProblem(source, number, *problem), problem[1].split(" (")[0]))
                continue
            keys = value.keys()
            if keys != last_keys:  # most files repeat the same keys on every line
                for key in keys:
                    columns.setdefault(key, None)
                last_keys = keys
            records.append(value)
            numbers.append(number)
    if not records and not bad:
        raise InvalidInput(f"{path}: empty file (no JSON lines)")
    return TableRead(source, "jsonl", list(columns), bad, True, _path=path, _records=records, _numbers=numbers)


def _json_column(values: list[Any]) -> pa.Array:
    """A column of JSON values: typed when pyarrow can hold them all as one type, else text (objects as JSON)."""
    import pyarrow as pa

    try:
        array = pa.array(values)
        if not pa.types.is_nested(array.type):
            return array
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        pass
    return pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values], pa.string())


# --------------------------------------------------------------------------------------------------------- Parquet


def _read_parquet(path: Path) -> TableRead:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        source: Any = path
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as handle:
                source = pa.BufferReader(handle.read())
        table = pq.read_table(source)
    except (pa.ArrowException, ValueError, OSError, EOFError, zlib.error) as exc:  # pyarrow raises OSError too
        raise InvalidInput(f"{path}: not a readable Parquet file: {_first_line(str(exc))}") from None
    try:
        table.validate(full=True)  # e.g. text columns holding invalid UTF-8, written by another tool
    except pa.ArrowException as exc:
        raise InvalidInput(f"{path}: the Parquet file holds invalid data: {_first_line(str(exc))}") from None
    names = table.column_names
    if len(set(names)) != len(names):
        raise InvalidInput(f"{path}: duplicate column names {sorted({n for n in names if names.count(n) > 1})}")
    return TableRead(str(path), "parquet", names, [], True, _path=path, _table=table)


# ----------------------------------------------------------------------------------------------------------- checks


def _text_problem(values: list[str], header: list[str]) -> tuple[str, str] | None:
    """(field, message) for the first value that is not valid text: an undecodable byte or a lone surrogate."""
    for name, value in zip(header, values, strict=True):
        found = _SURROGATE.search(value)
        if found is not None:
            return name, _surrogate_message(value, found.start())
    return None


def _json_text_problem(value: Any, key: str = "row") -> tuple[str, str] | None:
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        return None if found is None else (key, _surrogate_message(value, found.start()))
    if isinstance(value, dict):
        for name, item in value.items():
            found = _SURROGATE.search(name)
            if found is not None:
                return "row", f"{_surrogate_message(name, found.start())} in a key"
            problem = _json_text_problem(item, str(name) if key == "row" else key)
            if problem is not None:
                return problem
    if isinstance(value, list):
        for item in value:
            problem = _json_text_problem(item, key)
            if problem is not None:
                return problem
    return None


def _surrogate_message(value: str, position: int) -> str:
    char = ord(value[position])
    if 0xDC80 <= char <= 0xDCFF:
        return f"not valid UTF-8 text (byte 0x{char - 0xDC00:02x} at character {position + 1})"
    return f"not valid UTF-8 text (lone surrogate U+{char:04X} at character {position + 1})"


def _snippet(text: str) -> str:
    """A short quoted copy of a value for a message (repr escapes control characters and lone surrogates)."""
    return repr(text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "...")


def _one_line(text: str) -> str:
    """A library's multi-line message as one line."""
    return " ".join(text.split())


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
