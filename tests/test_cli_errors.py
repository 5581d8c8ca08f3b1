"""Issue 11's traceback list, each reproduced: one line on stderr, the right exit code (2 bad input or usage,
1 runtime), no traceback. Usage errors (bad option values, unknown options) are one line too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from semassoc.cli.app import app

runner = CliRunner()


def one_line_error(args: list[str], code: int, *contains: str) -> str:
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in contains:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("errors")
    catalog = root / "c.csv"
    catalog.write_text("product_id,title\na,Mug\nb,Cup\nc,Jar\n")
    events = root / "e.csv"
    events.write_text("basket_id,product_id,user_id\n1,a,u1\n1,b,u1\n2,a,u2\n2,c,u2\n3,b,u1\n3,c,u1\n")
    ws = root / "ws"
    assert runner.invoke(app, ["index", str(catalog), "-w", str(ws), "--model", "hashing:64"]).exit_code == 0
    assert runner.invoke(app, ["behavior", "build", str(events), "-w", str(ws), "--min-count", "1"]).exit_code == 0
    binary = root / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 8)
    a_file = root / "a-file"
    a_file.write_text("x")
    return {"root": root, "catalog": catalog, "events": events, "ws": ws, "binary": binary, "file": a_file}


def test_workspace_that_is_a_file(files):
    one_line_error(["index", files["catalog"], "-w", files["file"], "--model", "hashing:8"], 2, "is a file")
    one_line_error(["index", files["catalog"], "-w", files["file"] / "sub", "--model", "hashing:8"], 2, "Not a dir")
    one_line_error(["similar", "a", "-w", files["file"]], 1, "no semassoc workspace")


def test_workspace_on_a_filesystem_that_refuses_writes(files):
    # /sys refuses new directories even to root (chmod does not stop root, so a read-only directory would not do).
    one_line_error(["index", files["catalog"], "-w", "/sys/semassoc-ws", "--model", "hashing:8"], 2, "cannot create")


@pytest.mark.parametrize("command", ["similar", "related", "search", "complements", "recommend"])
@pytest.mark.parametrize("k", [str(2**64), str(2**70), "100001", "0", "-1"])
def test_k_out_of_range(files, command, k):
    target = {"search": "mug", "recommend": "u1"}.get(command, "a")
    one_line_error([command, target, "-w", files["ws"], "-k", k], 2, "--k")


def test_events_jsonl_with_invalid_utf8(files):
    path = files["root"] / "bad.jsonl"
    path.write_bytes(b'{"basket_id": 1, "product_id": "a"}\n{"basket_id": 1, "product_id": "\xff"}\n')
    one_line_error(["behavior", "build", path, "-w", files["root"] / "ws-utf8"], 2, "row 2, field 'product_id'")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("cols.toml", bytes(range(256)), "not UTF-8 text"),
        ("cols.json", b"[1, 2]", "not list"),
        ("cols2.json", b'{"id": 5}', "column name (text)"),
        ("cols.toml", b"[columns.title]\nx = 1\n", "column name (text)"),
        ("cols3.toml", b"id = \n", "cannot read column mapping"),
    ],
)
def test_columns_file_that_is_not_a_mapping(files, name, content, expected):
    path = files["root"] / name
    path.write_bytes(content)
    one_line_error(["index", files["catalog"], "-w", files["ws"], "--columns", path], 2, expected)


@pytest.mark.parametrize("dim", ["99999999999999", "65537", "0", "-5", "abc", "9" * 5000])
def test_absurd_hashing_dimension(files, dim):
    one_line_error(["index", files["catalog"], "-w", files["root"] / "ws-dim", "--model", f"hashing:{dim}"], 2)


@pytest.mark.parametrize(("device", "expected"), [("banana", "unknown device"), ("cuda:7", "not available")])
def test_unknown_or_unavailable_device(files, device, expected):
    pytest.importorskip("torch")
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    one_line_error(["index", files["catalog"], "-w", files["root"] / "ws-dev", "--device", device], 2, expected)


@pytest.mark.parametrize(
    ("out", "code"), [("/proc/nope/rules.csv", 1), ("/sys/rules.csv", 1), ("DIR", 2), ("rules.xlsx", 2)]
)
def test_unwritable_rules_out(files, out, code):
    # a path the system refuses is a runtime failure (1, io.WriteFailed); a directory or unknown format is usage (2)
    target = files["root"] if out == "DIR" else files["root"] / out if not out.startswith("/") else Path(out)
    one_line_error(["rules", files["events"], "--min-support", "0.1", "--out", target], code)


def test_unwritable_batch_out(files):
    one_line_error(["batch", "related", "--all", "-w", files["ws"], "--out", "/proc/nope/o.jsonl"], 1, "cannot write")


def test_binary_products_file_and_template(files):
    ids = files["root"] / "ids.txt"
    ids.write_bytes(bytes(range(256)) * 4)
    one_line_error(["batch", "related", "--products", ids, "-w", files["ws"], "--out", files["root"] / "o.jsonl"], 2)
    prompts = files["root"] / "prompts"
    prompts.mkdir(exist_ok=True)
    (prompts / "document.txt").write_bytes(bytes(range(256)))
    args = ["index", files["catalog"], "-w", files["root"] / "ws-t", "--model", "hashing:8", "--prompts", prompts]
    one_line_error(args, 2, "document template is not UTF-8")
    one_line_error(["index", files["binary"], "-w", files["root"] / "ws-b", "--model", "hashing:8"], 2, "row 1")
    one_line_error(["behavior", "build", files["binary"], "-w", files["root"] / "ws-b2"], 2, "row 1")


@pytest.mark.parametrize("url", ["http://[::1", "ht!tp://x", "http://localhost:99999", "localhost:6333", "ftp://x"])
def test_unparsable_qdrant_url(files, url):
    one_line_error(["index", files["catalog"], "-w", files["root"] / "ws-q", "--qdrant-url", url], 2, "--qdrant-url")


def test_qdrant_credentials_are_never_shown(files):
    url = "http://reader:s3cret-key@127.0.0.1:9"  # discard port: nothing listens
    line = one_line_error(["index", files["catalog"], "-w", files["root"] / "ws-c", "--qdrant-url", url], 1)
    assert "s3cret" not in line and "reader" not in line and "127.0.0.1:9" in line
    bad = "http://reader:s3cret@127.0.0.1:99999"
    line = one_line_error(["index", files["catalog"], "-w", files["root"] / "ws-c", "--qdrant-url", bad], 2)
    assert "s3cret" not in line


def test_malformed_manifest(files):
    ws = files["root"] / "ws-m"
    ws.mkdir()
    (ws / "manifest.json").write_text("{not json")
    one_line_error(["similar", "a", "-w", ws], 2, "manifest")


@pytest.mark.parametrize(
    "args",
    [
        ["similar", "a", "--min-price", "nan"],
        ["simlar", "a"],
        ["similar"],
        ["index", "--no-such-option"],
        ["behavior", "build", "EVENTS", "--session-gap", "inf"],
        ["behavior", "build", "EVENTS", "--half-life", "1e308"],
        ["behavior", "build", "EVENTS", "--weight", "view=nan"],
        ["behavior", "build", "EVENTS", "--exclude-pattern", "("],
        ["index", "CATALOG", "--delimiter", ";;"],
    ],
)
def test_usage_and_option_errors_are_one_line(files, args):
    args = [str(files["events"]) if a == "EVENTS" else str(files["catalog"]) if a == "CATALOG" else a for a in args]
    one_line_error([*args, "-w", files["root"] / "ws-u"] if args[0] in ("behavior", "index") else args, 2)


def test_json_errors_do_not_change_json_output(files):
    lines = runner.invoke(app, ["similar", "a", "-w", str(files["ws"]), "--json"]).stdout.splitlines()
    assert all(json.loads(line)["product_id"] for line in lines)
