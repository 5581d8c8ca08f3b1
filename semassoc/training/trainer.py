"""Fine-tune the workspace's encoder on co-purchase pairs, so that text vectors carry what shoppers buy together.

Text alone knows that two mugs are alike; it does not know that people who buy a cake stand also buy cake cases.
Training the Transformer on strong co-purchase pairs (in-batch negatives, sentence-transformers'
``MultipleNegativesRankingLoss``) moves that knowledge into the vectors, so even a product with no history gets
behaviour-aware neighbours from its text alone.

The pieces:

- :func:`semassoc.training.pairs.build_pairs` picks training pairs from the workspace's behaviour statistics (count,
  lift and NPMI thresholds; variant pairs dropped, see :func:`semassoc.ranking.variants.variant_reason`) and splits
  them by product: the validation pairs are those touching a held-out product that training never sees;
- :func:`train_encoder` renders both sides through the workspace's document template, fine-tunes the encoder
  (early stopping on validation retrieval or loss, a seed, a time budget that stops cleanly and keeps the best
  checkpoint) and saves a normal sentence-transformers directory in ``<workspace>/models/<name>/`` with its
  lineage in ``lineage.json``. ``semassoc index --model <that dir>`` re-encodes the catalog with it.

torch and sentence-transformers are imported inside the functions that train, never at module import.

Example:
    >>> from semassoc.training.trainer import TrainConfig, train_encoder
    >>> report = train_encoder(workspace=".semassoc", config=TrainConfig(epochs=1))  # doctest: +SKIP
    >>> report.model_dir  # doctest: +SKIP
    '.semassoc/models/tuned-20250101-120000'
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from semassoc.behaviour.stats import BehaviourStats
from semassoc.catalog import Product
from semassoc.errors import InvalidInput, NotFound
from semassoc.text.encoder import resolve_model
from semassoc.text.prompts import PromptSet
from semassoc.training.lineage import LINEAGE_SCHEMA, data_fingerprint, device_name, save_model, versions
from semassoc.training.loop import FineTuner, ProgressCallback, TrainInputs, TrainProgress, pick_device
from semassoc.training.pairs import TrainConfig, build_pairs
from semassoc.workspace import Workspace

__all__ = ["TrainConfig", "TrainProgress", "TrainReport", "train_encoder"]

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class TrainReport:
    """What :func:`train_encoder` did.

    Attributes:
        workspace: the workspace.
        name / model_dir: the tuned model's name and directory (``<workspace>/models/<name>``).
        encoder_id: the tuned model's encoder id (as ``semassoc index --model <model_dir>`` will record it).
        base_model / base_encoder_id: what was fine-tuned.
        device: where it trained (``cpu``, ``cuda``...).
        pairs: pair counts (considered, kept for training and validation, dropped by reason).
        data_fingerprint: sha256 of the behaviour sources, the options and the pairs with their texts.
        epochs / steps: epochs started and optimiser steps done.
        stopped: ``"completed"``, ``"early stopping"`` or ``"time budget"``.
        best_step: step of the kept checkpoint (0: the base model was never beaten, so it was kept unchanged).
        metrics: ``baseline`` and ``best`` validation metrics, and the last ``train_loss``.
        history: every validation (step, epoch, loss, recall@10, seconds).
        seconds: wall time of the call.
    """

    workspace: str
    name: str
    model_dir: str
    encoder_id: str
    base_model: str
    base_encoder_id: str
    device: str
    pairs: dict[str, Any]
    data_fingerprint: str
    epochs: int
    steps: int
    stopped: str
    best_step: int
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _read_workspace(workspace: str | Path | None, model: str | None, config: TrainConfig) -> TrainInputs:
    with Workspace.open(workspace) as ws:
        manifest = ws.manifest
        base_model = model or manifest.encoder_model or resolve_model(None)[0]
        if base_model.startswith("hashing:"):
            raise InvalidInput(
                f"cannot fine-tune the hashing encoder '{base_model}'; pass --model with a sentence-transformers "
                "model (e.g. all-MiniLM-L6-v2)"
            )
        if not (ws.behaviour_dir / "manifest.json").is_file():
            raise NotFound(f"no behaviour statistics in {ws.path}: run `semassoc behavior build EVENTS` first")
        prompt_set = PromptSet.load(manifest.prompts_dir)
        texts: dict[str, str] = {}
        for payload in ws.store.iter_payloads():
            product = Product.from_payload(payload)
            texts[product.product_id] = prompt_set.render_document(product.fields_for_prompt(), manifest.max_seq_length)
        if not texts:
            raise NotFound(f"no products in {ws.path}: run `semassoc index CATALOG` first")
        stats = BehaviourStats.open(ws.behaviour_dir)
        info = stats.info()
        fingerprint = {
            "behaviour_sources": [list(s) for s in info.sources],
            "behaviour_baskets": info.baskets,
            "behaviour_pairs": info.pairs,
            "behaviour_event_types": None if info.event_types is None else list(info.event_types),
            "behaviour_last_update": info.last_update.isoformat(),
            "behaviour_settings": manifest.behaviour,
            "prompts_digest": prompt_set.digest,
            "catalog_products": len(texts),
        }
        return TrainInputs(ws.path, base_model, texts, build_pairs(stats, texts, config), stats, fingerprint)


def train_encoder(
    *,
    workspace: str | Path | None = None,
    name: str | None = None,
    config: TrainConfig | None = None,
    model: str | None = None,
    device: str | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> TrainReport:
    """Fine-tune the workspace's encoder on its co-purchase pairs and save it in ``<workspace>/models/<name>/``.

    The workspace needs an indexed catalog (the texts) and behaviour statistics (the pairs); train only on
    behaviour you may learn from (for an honest evaluation: the events before the cut, as ``semassoc evaluate``
    builds them). The workspace is read at the start and closed while training, so other commands can use it.

    Args:
        workspace: workspace directory (default ``$SEMASSOC_WORKSPACE`` or ``./.semassoc``).
        name: model directory name (letters, digits, ``.``, ``_``, ``-``); default ``tuned-<UTC time>``.
        config: pair thresholds and training options (:class:`TrainConfig`).
        model: the encoder to fine-tune; default: the workspace's (else the bundled all-MiniLM-L6-v2).
        device: ``cpu``, ``cuda``, ``cuda:1``...; default: CUDA when available (then MPS), else CPU.
        overwrite: replace an existing model of that name.
        progress: called with a :class:`TrainProgress` after every step and validation.

    Returns:
        TrainReport. The model directory holds a normal sentence-transformers model (load it with
        ``semassoc.encoder.load_encoder(dir)``; index with it by ``semassoc index --model dir``) and
        ``lineage.json`` (base model, data fingerprint, parameters, metrics, time, device).

    Raises:
        NotFound: no workspace, no indexed products or no behaviour statistics.
        InvalidInput: bad options, an existing model name without ``overwrite``, too few pairs, a hashing encoder.
    """
    started_at = datetime.now(timezone.utc).replace(microsecond=0)
    started = time.perf_counter()
    config = config or TrainConfig()
    config.validate()
    name = name or f"tuned-{started_at.strftime('%Y%m%d-%H%M%S')}"
    if not _MODEL_NAME.match(name):
        raise InvalidInput(f"--name {name!r}: use letters, digits, '.', '_' and '-' (at most 100, no '/')")
    inputs = _read_workspace(workspace, model, config)
    destination = inputs.workspace / "models" / name
    if destination.exists() and not overwrite:
        raise InvalidInput(f"{destination} exists; choose another --name or pass --overwrite")
    if len(inputs.pairs.train) < 2:
        raise InvalidInput(
            f"only {len(inputs.pairs.train)} training pair(s) pass the thresholds (considered "
            f"{inputs.pairs.considered}, dropped {inputs.pairs.dropped}); lower --min-count, --min-lift or --min-npmi"
        )
    fingerprint = data_fingerprint(inputs.fingerprint, config.pair_options(), inputs.pairs, inputs.texts)
    import torch

    torch.manual_seed(config.seed)
    chosen = pick_device(device)
    trainer = FineTuner(inputs, config, chosen, started)
    outcome = trainer.run(progress)
    if progress is not None:
        progress(
            TrainProgress(
                "save", outcome["epochs"], outcome["steps"], outcome["total_steps"], None, trainer.elapsed(), 0.0
            )
        )

    base_id, base_target = resolve_model(inputs.base_model)
    seconds = time.perf_counter() - started
    lineage = {
        "schema_version": LINEAGE_SCHEMA,
        "name": name,
        "base_model": {"model": inputs.base_model, "encoder_id": base_id, "path": base_target},
        "data": {
            "fingerprint": fingerprint,
            **inputs.fingerprint,
            "pair_options": config.pair_options(),
            "pairs": inputs.pairs.summary(),
        },
        "parameters": {**config.to_dict(), "loss": "MultipleNegativesRankingLoss (in-batch negatives)"},
        "metrics": outcome["metrics"],
        "history": outcome["history"],
        "training": {
            "epochs": outcome["epochs"],
            "steps": outcome["steps"],
            "planned_steps": outcome["total_steps"],
            "stopped": outcome["stopped"],
            "best_step": outcome["best_step"],
            "hard_negatives": outcome["hard_negatives"],
            "started": started_at.isoformat(),
            "finished": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
            "seconds": round(seconds, 1),
            "device": device_name(chosen),
        },
        "versions": versions(),
    }
    save_model(trainer.model, destination, lineage)
    encoder_id, _ = resolve_model(str(destination))
    return TrainReport(
        workspace=str(inputs.workspace),
        name=name,
        model_dir=str(destination),
        encoder_id=encoder_id,
        base_model=inputs.base_model,
        base_encoder_id=base_id,
        device=chosen,
        pairs=inputs.pairs.summary(),
        data_fingerprint=fingerprint,
        epochs=outcome["epochs"],
        steps=outcome["steps"],
        stopped=outcome["stopped"],
        best_step=outcome["best_step"],
        metrics=outcome["metrics"],
        history=outcome["history"],
        seconds=time.perf_counter() - started,
    )
