"""The CLI: output formats, exit codes and one-line errors. The CLI calls the API; these tests check the wiring."""

from __future__ import annotations

import json
import re

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from semassoc.cli.app import app

from .conftest import REPO

runner = CliRunner()


def run(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


@pytest.fixture
def indexed(catalog_csv, tmp_path):
    ws = tmp_path / "ws"
    run("index", str(catalog_csv), "-w", str(ws), "--model", "hashing:256")
    return ws


def test_index_prints_counts_and_json(catalog_csv, tmp_path):
    ws = tmp_path / "ws"
    result = run("index", str(catalog_csv), "-w", str(ws), "--model", "hashing:64")
    assert "8 products" in result.output and "8 added" in result.output
    result = run("index", str(catalog_csv), "-w", str(ws), "--json")
    report = json.loads(result.stdout)
    assert (report["unchanged"], report["encoded"], report["encoder_id"]) == (8, 0, "hashing:64")


def test_similar_table_and_json_lines(indexed):
    table = run("similar", "l1", "-w", str(indexed), "-k", "2").output
    assert "similar to l1" in table and "│ l2 " in table  # a rich table (its width follows the terminal)
    lines = run("similar", "l1", "-w", str(indexed), "-k", "3", "--json").stdout.strip().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["rank"] for r in rows] == [1, 2, 3] and rows[0]["product_id"] == "l2"
    assert set(rows[0]) == {"rank", "product_id", "title", "score", "signals", "explanation", "attributes"}


def test_filters_on_the_command_line(indexed):
    out = run("similar", "m1", "-w", str(indexed), "--category", "kitchen", "--in-stock", "--json").stdout
    assert {json.loads(line)["product_id"] for line in out.splitlines()} == {"m2", "t1"}
    out = run("similar", "m1", "-w", str(indexed), "--exclude", "m2,m3", "--max-price", "5", "--json").stdout
    ids = {json.loads(line)["product_id"] for line in out.splitlines()}
    assert ids and not ids & {"m1", "m2", "m3"} and all(i in {"t1", "l1", "l2"} for i in ids)


def test_search_remove_info(indexed):
    out = run("search", "scented candle", "-w", str(indexed), "-k", "2", "--json").stdout
    assert {json.loads(line)["product_id"] for line in out.splitlines()} == {"c1", "c2"}
    assert "removed 2 products; 6 left" in run("remove", "c1", "c2", "-w", str(indexed)).output
    info = json.loads(run("info", "-w", str(indexed), "--json").stdout)
    assert (info["products"], info["encoder_id"], info["store"]) == (6, "hashing:256", "embedded")
    assert "hashing:256" in run("info", "-w", str(indexed)).output
    # --qdrant-url reaches the workspace for search as for every other command: an embedded one refuses it
    refused = run("search", "candle", "-w", str(indexed), "--qdrant-url", "http://127.0.0.1:9", code=2).output
    assert "embedded store" in refused


def test_unknown_product_is_one_line_exit_1(indexed):
    result = run("similar", "nope", "-w", str(indexed), code=1)
    assert result.output.strip().count("\n") == 0
    assert "error: product 'nope' is not in the workspace" in result.output
    assert "Traceback" not in result.output


def test_bad_catalog_exits_2_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("product_id,title,price\na,Mug,1\nb,Cup,cheap\n")
    ws = tmp_path / "ws"
    result = run("index", str(bad), "-w", str(ws), "--model", "hashing:8", code=2)
    assert f"{bad}: row 3, field 'price'" in result.output and "Traceback" not in result.output
    assert not ws.exists()


def test_skip_prints_a_summary(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("product_id,title,price\na,Mug,1\nb,Cup,cheap\nc,,2\n")
    result = run("index", str(bad), "-w", str(tmp_path / "ws"), "--model", "hashing:8", "--on-error", "skip")
    assert "skipped 2 of 3 rows" in result.output and "row 4, field 'title'" in result.output


def test_usage_errors_exit_2(indexed):
    run("similar", "m1", "-w", str(indexed), "-k", "0", code=2)
    run("similar", "-w", str(indexed), code=2)
    run("index", code=2)
    run("similar", "m1", "-w", str(indexed), "--min-price", "5", "--max-price", "1", code=2)


def test_encoder_mismatch_exits_2(indexed):
    result = run("search", "mug", "-w", str(indexed), "--model", "hashing:8", code=2)
    assert "built with encoder 'hashing:256'" in result.output


def test_column_mapping_options(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text("StockCode,Description,UnitPrice\nA1,Red mug,2.5\nA2,Blue mug,3\n")
    ws = tmp_path / "ws"
    run("index", str(path), "-w", str(ws), "--model", "hashing:8", "--title-column", "Description")
    out = run("similar", "A1", "-w", str(ws), "--json").stdout
    assert json.loads(out.splitlines()[0])["attributes"]["price"] == 3.0


def test_every_command_has_help_and_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    command = get_command(app)
    names = sorted(command.commands)
    assert {"index", "similar", "search", "remove", "info"} <= set(names)
    for name in names:
        sub = command.commands[name]
        assert sub.help and sub.help.strip(), f"{name} has no help"
        if hasattr(sub, "commands"):
            for child in sub.commands:
                assert re.search(rf"semassoc {name} {child}\b", readme), f"`semassoc {name} {child}` not in README"
        else:
            assert re.search(rf"semassoc {name}\b", readme), f"`semassoc {name}` is not shown in README.md"
        run(name, "--help")


def test_metric_choices_are_the_library_weightings():
    from semassoc.behaviour.weightings import METRICS
    from semassoc.cli.options import MetricChoice

    assert [m.value for m in MetricChoice] == list(METRICS)


def test_terminal_text_from_data_is_escaped():
    from semassoc.cli.output import safe

    # shown escaped, not stripped: two ids that differ only by a control character stay distinguishable
    assert safe("[bold]mug[/]\x1b[31m red\x1b]0;title\x07\x07\x9b") == (
        "\\[bold]mug\\[/]\\x1b[31m red\\x1b]0;title\\x07\\x07\\x9b"
    )


def test_weights_and_presets_are_parsed_by_the_library():
    from semassoc.behaviour.presets import load_options
    from semassoc.errors import InvalidInput

    options = load_options(preset="online-retail", weights=["Purchase=5", "view=1"], exclude_items=["POST"])
    assert options.weights == {"purchase": 5.0, "view": 1.0}
    assert options.filters.cancellation_prefix == "C" and "POST" in options.filters.excluded_items
    with pytest.raises(InvalidInput, match="TYPE=NUMBER"):
        load_options(weights=["purchase"])
    with pytest.raises(InvalidInput, match="only preset"):
        load_options(preset="retail")
    run("rules", str(REPO / "examples" / "online_retail" / "invoices.parquet"), "--preset", "retail", code=2)
