"""End to end with the real bundled Transformer (all-MiniLM-L6-v2) on the bundled Online Retail sample."""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys

import pytest

from semassoc import api

from .conftest import EXAMPLES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_ws(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    with (EXAMPLES / "catalog.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    keep = [r for r in rows if any(w in r["title"] for w in ("HEART", "CHRISTMAS", "MUG", "CANDLE"))]
    path = tmp / "catalog.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(keep)
    ws = tmp / "ws"
    report = api.index_catalog(path, workspace=ws)
    assert report.encoder_id == "all-MiniLM-L6-v2" and report.added == len(keep) and report.encoded > 0
    return ws, path, {r["product_id"]: r["title"] for r in keep}


def test_real_model_neighbours_make_sense(real_ws):
    ws, _, titles = real_ws
    seed = next(pid for pid, t in titles.items() if t == "WHITE HANGING HEART T-LIGHT HOLDER")
    hits = api.similar(seed, workspace=ws, k=5)
    assert all("HEART" in h.title or "T-LIGHT" in h.title for h in hits), [h.title for h in hits]
    assert hits[0].score > 0.8 and all(a.score >= b.score for a, b in itertools.pairwise(hits))
    found = api.search("coffee mug", workspace=ws, k=5)
    assert sum("MUG" in h.title for h in found) >= 4, [h.title for h in found]


def test_real_model_reindex_encodes_nothing_and_loads_no_model(real_ws):
    ws, path, _ = real_ws
    code = (
        "import sys; from semassoc import api; "
        f"r = api.index_catalog({str(path)!r}, workspace={str(ws)!r}); "
        "print(r.encoded, r.unchanged, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "0" and int(out[1]) > 0 and out[2] == "False"


def test_similar_as_a_process_never_imports_torch(real_ws):
    ws, _, titles = real_ws
    pid = next(iter(titles))
    code = (
        "import sys, semassoc.cli.app as cli\n"
        f"sys.argv = ['semassoc', 'similar', {pid!r}, '-w', {str(ws)!r}, '-k', '3', '--json']\n"
        "try:\n    cli.main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert len([json.loads(line) for line in done.stdout.splitlines()]) == 3
    assert done.stderr.strip() == "False"
