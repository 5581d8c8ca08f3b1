"""Property-based fuzzing of everything a user hands semassoc: catalog and events files in every format (CSV, TSV,
JSON lines, Parquet, gzipped or not; random bytes, unicode, lone surrogates, rich markup, control characters, huge
fields, odd numbers, missing or duplicate columns) through the readers, and random option values through the CLI.

The properties: no exception other than semassoc's own error family (SemassocError) ever escapes; every error is one
line; skip mode drops exactly the bad rows; pyarrow's fast reader and the exact reader agree.

Profiles: the default ("fast", CI) runs a few dozen inputs per test (< 60 s in all); ``SEMASSOC_FUZZ=full`` runs
over 10,000. ``SEMASSOC_FUZZ_REPORT=FILE`` writes the number of inputs each test tried.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from semassoc.behaviour.events import load_events
from semassoc.catalog import CatalogColumns, read_catalog
from semassoc.cli.app import app
from semassoc.errors import SemassocError
from semassoc.tables import read_table

# An "Exception ignored" printed by a library callback is output the user sees: it fails the test too.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
FULL = os.environ.get("SEMASSOC_FUZZ", "").lower() == "full"
# examples per test: (fast, full); the full numbers add up to more than 10,000
BUDGET = {
    "catalog": (40, 3000),
    "events": (40, 3000),
    "skip": (20, 1500),
    "agree": (20, 1500),
    "cli_query": (25, 1000),
    "cli_write": (10, 300),
}
TRIED: Counter[str] = Counter()
STARTED = time.perf_counter()


def profile(name: str):
    fast, full = BUDGET[name]
    return settings(
        max_examples=full if FULL else fast,
        deadline=None,
        derandomize=not FULL,  # CI runs the same inputs every time
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
        database=None,
    )


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    summary = {
        "profile": "full" if FULL else "fast",
        "inputs": dict(TRIED),
        "total": sum(TRIED.values()),
        "seconds": round(time.perf_counter() - STARTED, 1),
    }
    print(f"\nfuzz: {json.dumps(summary)}")
    target = os.environ.get("SEMASSOC_FUZZ_REPORT")
    if target:
        Path(target).write_text(json.dumps(summary, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------------- strategies
SPECIAL = [
    "",
    " ",
    "NA",
    "nan",
    "NULL",
    "None",
    "Infinity",
    "-inf",
    "1e999",
    "-0",
    "0",
    "1",
    "3.5",
    "-2",
    "true",
    "yes",
    "[/]",
    "[link=https://evil.example]x[/link]",
    "[bold]",
    "\x1b[31mred\x1b[0m",
    "\x1b]8;;http://x\x07",
    "a\rb",
    "\x00",
    "\u202e",
    "\ud800",
    "\udcff",
    "\ufeff",
    '"',
    '""',
    ",",
    ";",
    "\t",
    "|",
    "\n",
    "\r\n",
    ":emoji:",
    "2024-01-01 10:00:00",
    "2024-13-45",
    "1700000000",
    "10000-01-01",
    "x" * 200_000,
]
NAMES = [
    "product_id",
    "id",
    "sku",
    "title",
    "name",
    "description",
    "category",
    "brand",
    "price",
    "in_stock",
    "basket_id",
    "order_id",
    "Invoice",
    "StockCode",
    "user_id",
    "Customer ID",
    "timestamp",
    "InvoiceDate",
    "quantity",
    "event_type",
    "",
]
text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=12)
scalar = st.one_of(
    text,
    st.sampled_from(SPECIAL),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
value = st.one_of(scalar, st.lists(scalar, max_size=3), st.dictionaries(text, scalar, max_size=2))
column_names = st.lists(st.one_of(st.sampled_from(NAMES), text), min_size=1, max_size=7)
FORMATS = ["csv", "tsv", "jsonl", "parquet", "csv.gz", "jsonl.gz", "parquet.gz", "bin.csv", "bin.jsonl", "bin.parquet"]


@st.composite
def table_file(draw, root: Path):
    """A file: (path, format). Rows of random values under random columns, written with random damage."""
    fmt = draw(st.sampled_from(FORMATS))
    names = draw(column_names)
    rows = draw(st.lists(st.lists(value, min_size=len(names), max_size=len(names)), max_size=8))
    path = root / f"f{draw(st.integers(0, 10**9))}.{fmt.removeprefix('bin.')}"
    if fmt.startswith("bin."):
        data = draw(st.binary(max_size=600))
    elif fmt.startswith("parquet"):
        columns = {}
        for i, raw_name in enumerate(names):
            # Parquet names are UTF-8: a lone surrogate cannot be stored (it can in CSV and JSON bytes)
            name = raw_name.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
            if name in columns:
                continue
            values = [r[i] for r in rows]
            try:
                columns[name] = pa.array(values)
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                columns[name] = pa.array(
                    [
                        None if v is None else str(v).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
                        for v in values
                    ],
                    pa.string(),
                )
        sink = io.BytesIO()
        try:
            pq.write_table(pa.table(columns), sink)
        except pa.ArrowException:  # e.g. an empty struct: Parquet cannot hold it, so the file holds text
            sink = io.BytesIO()
            pq.write_table(
                pa.table(
                    {
                        n: pa.array([None if v is None else repr(v) for v in c.to_pylist()], pa.string())
                        for n, c in columns.items()
                    }
                ),
                sink,
            )
        data = sink.getvalue()
    elif fmt.startswith("jsonl"):
        lines = []
        for row in rows:
            record = dict(zip([n if isinstance(n, str) else str(n) for n in names], row, strict=False))
            lines.append(json.dumps(record, ensure_ascii=draw(st.booleans()), allow_nan=True))
        lines += draw(st.lists(st.sampled_from(["[1, 2]", "{oops", '"text"', "", "null", "{}"]), max_size=2))
        data = "\n".join(lines).encode("utf-8", "surrogatepass")
    else:
        delimiter = "\t" if fmt == "tsv" else draw(st.sampled_from([",", ";", "\t", "|"]))
        out = io.StringIO()
        writer = csv.writer(out, delimiter=delimiter)
        writer.writerow(names)
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])
        data = out.getvalue().encode("utf-8", "surrogatepass")
    if not fmt.startswith("bin.") and draw(st.booleans()):  # damage: a few random bytes in random places
        for position, byte in draw(
            st.lists(st.tuples(st.integers(0, max(len(data), 1)), st.binary(min_size=1, max_size=3)), max_size=3)
        ):
            data = data[:position] + byte + data[position:]
    if fmt.endswith(".gz"):
        data = gzip.compress(data)
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))]  # truncated archive
    path.write_bytes(data)
    return path, fmt


def one_line(error: SemassocError) -> None:
    message = str(error)
    assert message and "\n" not in message and "\r" not in message, repr(message)


# --------------------------------------------------------------------------------------------------------- readers
@profile("catalog")
@given(data=st.data())
def test_catalog_reader_raises_only_its_own_one_line_errors(tmp_path_factory, data):
    TRIED["catalog"] += 1
    path, _ = data.draw(table_file(tmp_path_factory.mktemp("c")))
    mapping = data.draw(
        st.one_of(
            st.none(),
            st.builds(CatalogColumns, id=st.sampled_from([None, *NAMES]), title=st.sampled_from([None, *NAMES])),
        )
    )
    delimiter = data.draw(st.sampled_from([None, None, ",", ";", "\t", "ab", "\n"]))
    for mode in ("strict", "skip"):
        try:
            result = read_catalog(path, mapping, on_error=mode, delimiter=delimiter)
        except SemassocError as error:
            one_line(error)
            continue
        assert len({p.product_id for p in result.products}) == len(result.products)
        for problem in result.problems:
            assert "\n" not in str(problem)
            json.dumps(result.products[0].to_payload()) if result.products else None  # payloads are JSON


@profile("events")
@given(data=st.data())
def test_events_reader_raises_only_its_own_one_line_errors(tmp_path_factory, data):
    from datetime import timedelta

    TRIED["events"] += 1
    path, _ = data.draw(table_file(tmp_path_factory.mktemp("e")))
    columns = data.draw(
        st.one_of(
            st.none(),
            st.dictionaries(
                st.sampled_from(["item", "basket", "user", "timestamp", "event_type", "quantity", "bogus"]),
                st.sampled_from(NAMES),
                max_size=3,
            ),
        )
    )
    half_life = data.draw(st.one_of(st.none(), st.sampled_from([timedelta(days=7), timedelta(0)])))
    for mode in ("strict", "skip"):
        try:
            events = load_events(
                path,
                columns,
                on_error=mode,
                half_life=half_life,
                user_key=data.draw(st.sampled_from([None, b"k" * 16])),
            )
        except SemassocError as error:
            one_line(error)
            continue
        assert len(events) + events.skipped.rows + sum(events.filtered.values()) == events.rows_read
        events.baskets()


@profile("skip")
@given(
    good=st.lists(
        st.text(
            st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=8
        ),
        min_size=1,
        max_size=30,
        unique=True,
    ),
    bad_at=st.sets(st.integers(0, 40), max_size=5),
    damage=st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80abc"]),
    fmt=st.sampled_from(["csv", "tsv", "jsonl"]),
)
def test_skip_mode_drops_exactly_the_bad_rows(tmp_path_factory, good, bad_at, damage, fmt):
    ids = [f"p{i}-{g.strip()}" for i, g in enumerate(good)]
    assume(all(i.strip() == i and not any(c in i for c in ',;\t|"\r\n') for i in ids))
    TRIED["skip"] += 1
    lines, expected_bad, line = [], [], 1
    header = "product_id\ttitle" if fmt == "tsv" else "product_id,title"
    body = [header.encode()] if fmt != "jsonl" else []
    number = 1 if fmt != "jsonl" else 0
    for position, pid in enumerate(ids):
        number += 1
        if fmt == "jsonl":
            body.append(json.dumps({"product_id": pid, "title": f"t {pid}"}, ensure_ascii=False).encode())
        else:
            body.append(f"{pid}{header[10]}t {pid}".encode())
        if position in bad_at:
            number += 1
            row = b'{"product_id": "x' + damage + b'", "title": "y"}' if fmt == "jsonl" else b"x" + damage + b",y"
            body.append(row.replace(b",", b"\t") if fmt == "tsv" else row)
            expected_bad.append(number)
    path = tmp_path_factory.mktemp("s") / f"c.{fmt}"
    path.write_bytes(b"\n".join(body) + b"\n")
    del lines, line
    result = read_catalog(path, on_error="skip")
    assert [p.product_id for p in result.products] == ids
    assert [p.row for p in result.problems] == expected_bad
    if expected_bad:
        with pytest.raises(SemassocError, match=f"row {expected_bad[0]},"):
            read_catalog(path)


@profile("agree")
@given(data=st.data())
def test_fast_and_exact_readers_agree(tmp_path_factory, data):
    path, fmt = data.draw(table_file(tmp_path_factory.mktemp("a")))
    assume(fmt in ("csv", "tsv", "csv.gz", "jsonl"))
    TRIED["agree"] += 1
    try:
        fast = read_table(path)
        exact = read_table(path, exact=True)
    except SemassocError as error:
        one_line(error)
        return
    if fast.exact_numbers or exact.bad_rows:
        return  # the fast reader handed the file to the exact one, or there were rows to set aside
    assert fast.columns == exact.columns
    if fmt.startswith("csv") or fmt == "tsv":
        assert fast.table.to_pylist() == exact.table.to_pylist()
    else:
        assert fast.num_rows == exact.num_rows


# ------------------------------------------------------------------------------------------------------------- CLI
runner = CliRunner()
ARG_TEXT = st.one_of(text.filter(lambda t: "\x00" not in t), st.sampled_from([s for s in SPECIAL if "\x00" not in s]))
NUMBER_TEXT = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "", "abc", "0x10", "1_000", " 3 "]),
)


def check_cli(args: list[str]) -> None:
    result = runner.invoke(app, args, env={"COLUMNS": "120"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"semassoc {args!r} raised {result.exception!r}") from result.exception
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.output)
    if result.exit_code != 0:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
    for char in ("\x1b", "\r", "\x07", "\u202e"):
        assert char not in result.output, (args, repr(char))


@pytest.fixture(scope="module")
def cli_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    catalog = root / "c.jsonl"
    hostile = ["a", "b", "[/]", "\x1b[31mred", "c\rd", "NA"]
    catalog.write_text(
        "".join(
            json.dumps({"product_id": p, "title": f"mug {p} [bold]", "price": i, "category": "k"}) + "\n"
            for i, p in enumerate(hostile)
        )
    )
    events = root / "e.jsonl"
    events.write_text(
        "".join(
            json.dumps({"basket_id": b, "product_id": hostile[(b + j) % 6], "user_id": f"u{b % 3}"}) + "\n"
            for b in range(20)
            for j in range(3)
        )
    )
    ws = root / "ws"
    assert runner.invoke(app, ["index", str(catalog), "-w", str(ws), "--model", "hashing:32"]).exit_code == 0
    assert runner.invoke(app, ["behavior", "build", str(events), "-w", str(ws), "--min-count", "1"]).exit_code == 0
    return {"root": root, "ws": str(ws), "catalog": str(catalog), "events": str(events)}


@profile("cli_query")
@given(data=st.data())
def test_query_commands_with_random_options(cli_ws, data):
    TRIED["cli_query"] += 1
    command = data.draw(st.sampled_from(["similar", "related", "complements", "search", "recommend", "info"]))
    target = data.draw(st.one_of(st.sampled_from(["a", "[/]", "\x1b[31mred", "u1", "NA"]), ARG_TEXT))
    args = [command] if command == "info" else [command, target]
    args += ["-w", cli_ws["ws"]]
    options = {
        "-k": NUMBER_TEXT,
        "--min-price": NUMBER_TEXT,
        "--max-price": NUMBER_TEXT,
        "--category": ARG_TEXT,
        "--brand": ARG_TEXT,
        "--exclude": ARG_TEXT,
        "--metric": st.sampled_from(["lift", "count", "bogus", ""]),
        "--mode": st.sampled_from(["substitutes", "complements", "auto", "x"]),
        "--min-count": NUMBER_TEXT,
        "--history": ARG_TEXT,
        "--interests": ARG_TEXT,
        "--qdrant-url": ARG_TEXT,
    }
    for name in data.draw(st.lists(st.sampled_from(sorted(options)), max_size=3, unique=True)):
        args += [name, data.draw(options[name])]
    if data.draw(st.booleans()):
        args.append("--json")
    check_cli(args)


@profile("cli_write")
@given(data=st.data())
def test_writing_commands_with_random_options_and_files(cli_ws, tmp_path_factory, data):
    TRIED["cli_write"] += 1
    root = tmp_path_factory.mktemp("w")
    path, _ = data.draw(table_file(root))
    command = data.draw(st.sampled_from(["index", "behavior build", "rules", "batch related"]))
    args = command.split()
    if command == "batch related":
        args += [
            "--products",
            str(path),
            "-w",
            cli_ws["ws"],
            "--out",
            str(root / data.draw(st.sampled_from(["o.jsonl", "o.csv", "o.parquet", "o.xlsx", "d/o.jsonl"]))),
        ]
    else:
        args += [str(data.draw(st.sampled_from([path, Path(cli_ws["catalog"]), Path(cli_ws["events"])])))]
        if command != "rules":
            args += ["-w", str(root / "ws")]
    options = {
        "index": {
            "--model": st.one_of(st.just("hashing:8"), st.builds(lambda t: f"hashing:{t}", NUMBER_TEXT)),
            "--device": st.sampled_from(["cpu", "cuda:9", "banana", ""]),
            "--delimiter": ARG_TEXT,
            "--on-error": st.sampled_from(["skip", "strict", "x"]),
            "--id-column": ARG_TEXT,
            "--qdrant-url": ARG_TEXT,
            "--batch-size": NUMBER_TEXT,
        },
        "behavior build": {
            "--session-gap": NUMBER_TEXT,
            "--half-life": NUMBER_TEXT,
            "--weight": ARG_TEXT,
            "--on-error": st.sampled_from(["skip", "strict"]),
            "--exclude-pattern": ARG_TEXT,
            "--item-column": ARG_TEXT,
            "--min-count": NUMBER_TEXT,
            "--delimiter": ARG_TEXT,
        },
        "rules": {
            "--min-support": NUMBER_TEXT,
            "--min-confidence": NUMBER_TEXT,
            "--max-len": NUMBER_TEXT,
            "--out": st.sampled_from(["/proc/x/r.csv", "r.xlsx", "r.jsonl"]),
            "--sort": ARG_TEXT,
        },
        "batch related": {"-k": NUMBER_TEXT, "--chunk-size": NUMBER_TEXT},
    }[command]
    if command == "index":
        args += ["--model", "hashing:8"]
    for name in data.draw(st.lists(st.sampled_from(sorted(options)), max_size=3, unique=True)):
        args += [name, data.draw(options[name])]
    if "--out" in args and command == "rules":
        position = args.index("--out") + 1
        args[position] = args[position] if args[position].startswith("/") else str(root / args[position])
    check_cli(args)
