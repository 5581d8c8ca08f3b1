"""Text from data reaches the terminal escaped: rich markup, control characters, ANSI escapes, bidirectional
overrides and lone surrogates in ids and titles never crash a table, never render, never act on the terminal; --json
stays exact JSON."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from semassoc.cli.app import app
from semassoc.cli.output import plain, safe

runner = CliRunner()

HOSTILE = {
    "m1": "[/] closing tag",
    "m2": "[link=https://evil.example]click me[/link]",
    "m3": "\x1b[31mred\x1b[0m \x1b]8;;https://evil.example\x07osc link",
    "[/]": "id that is markup [bold]",
    "c\rr": "carriage\rreturn and back\bspace",
    "bidi\u202e": "override \u202edesrever",
    "trail\\": "ends with a backslash\\",
}


def invoke(*args: str, code: int = 0):
    result = runner.invoke(app, list(args), env={"COLUMNS": "400"})  # wide: no cell is wrapped
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def hostile_ws(tmp_path):
    catalog = tmp_path / "c.jsonl"
    rows = [{"product_id": pid, "title": f"mug {title}", "category": "[red]kitchen"} for pid, title in HOSTILE.items()]
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    events = tmp_path / "e.jsonl"
    ids = list(HOSTILE)
    baskets = [(b, ids[(b + j) % len(ids)]) for b in range(40) for j in range(3)]
    events.write_text(
        "".join(json.dumps({"basket_id": b, "product_id": p, "user_id": f"u[/]{b % 4}"}) + "\n" for b, p in baskets),
        encoding="utf-8",
    )
    ws = tmp_path / "ws"
    invoke("index", str(catalog), "-w", str(ws), "--model", "hashing:64")
    invoke("behavior", "build", str(events), "-w", str(ws), "--min-count", "1")
    return ws


def no_raw_controls(text: str) -> None:
    for char in ("\x1b", "\r", "\b", "\x07", "\u202e"):
        assert char not in text, repr(char)


def test_safe_and_plain_escape_what_a_terminal_would_act_on():
    assert plain("\x1b[31mred") == "\\x1b[31mred"
    assert plain("a\nb\tc\u202ed\ud800") == "a\\x0ab\\x09c\\u202ed\\ud800"
    assert safe("[/]") == "\\[/]" and safe("[link=x]y[/link]").startswith("\\[link=x]")
    assert plain("café 陶瓷 🙂") == "café 陶瓷 🙂"


def shown(pid: str) -> tuple[str, str]:
    """How a table shows this product's id and title: escaped, never interpreted, the rest exactly as typed."""
    title = " ".join(f"mug {HOSTILE[pid]}".split())  # the catalog collapses whitespace (\r, \t...) in titles
    return plain(pid), plain(title)


def test_search_table_shows_every_hostile_product_literally(hostile_ws):
    out = invoke("search", "mug", "-w", str(hostile_ws), "-k", "10").output
    no_raw_controls(out)
    for pid in HOSTILE:
        product, title = shown(pid)
        assert f"│ {product} " in out and title in out, (pid, product, title)
    assert "\\x1b]8;;https://evil.example\\x07osc" in out  # an OSC 8 hyperlink is shown, not opened
    assert "│ trail\\ " in out  # a trailing backslash is not doubled


@pytest.mark.parametrize("pid", list(HOSTILE))
def test_every_table_takes_hostile_ids_and_titles(hostile_ws, pid):
    ws = str(hostile_ws)
    for args in (
        ("similar", pid, "-w", ws, "-k", "10"),
        ("related", pid, "-w", ws, "-k", "10"),
        ("complements", pid, "-w", ws, "-k", "10"),
    ):
        out = invoke(*args).output
        no_raw_controls(out)
        others = [p for p in HOSTILE if p != pid and f"│ {plain(p)} " in out]
        assert others, out  # the table was printed, with other hostile products in it
        for other in others:
            assert shown(other)[1] in out
        assert plain(pid) in out  # the title line names the query product, escaped


def test_json_output_is_exact(hostile_ws):
    lines = invoke("search", "mug", "-w", str(hostile_ws), "-k", "10", "--json").stdout.splitlines()
    found = {json.loads(line)["product_id"]: json.loads(line)["title"] for line in lines}
    assert set(found) == set(HOSTILE)
    no_raw_controls("\n".join(lines))
    assert found["m1"] == "mug [/] closing tag" and found["[/]"] == "mug id that is markup [bold]"
    assert found["m2"] == "mug [link=https://evil.example]click me[/link]"


def test_errors_quoting_data_are_one_escaped_line(hostile_ws):
    result = invoke("similar", "nope\x1b[2J[/]", "-w", str(hostile_ws), code=1)
    no_raw_controls(result.output)
    assert len(result.output.strip().splitlines()) == 1 and "\\x1b[2J[/]" in result.output


def test_recommend_and_rules_with_markup_in_user_and_product_ids(hostile_ws):
    out = invoke("recommend", "u[/]1", "-w", str(hostile_ws), "-k", "5").output
    no_raw_controls(out)
    assert "u[/]1" in out
