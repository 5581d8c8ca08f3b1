"""The fine-tuning loop: conflict-free batches, MultipleNegativesRankingLoss, validation (loss and recall@10 of
held-out products), early stopping, the time budget and the best checkpoint.

torch and sentence-transformers are imported when a :class:`FineTuner` is built, never at module import.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semassoc.behaviour.stats import BehaviourStats
from semassoc.errors import InvalidInput
from semassoc.evaluation.metrics import recall_at_k
from semassoc.ranking.variants import base_code, colourless
from semassoc.text.encoder import resolve_model
from semassoc.training.pairs import PairSet, TrainConfig, TrainPair


@dataclass(frozen=True)
class TrainProgress:
    """What the progress callback receives, after every step and every validation.

    Attributes:
        stage: ``"baseline"`` (validating the base model), ``"train"``, ``"validate"`` or ``"save"``.
        epoch: current epoch (1-based; 0 before training).
        step: optimiser steps done.
        total_steps: steps planned (epochs x batches per epoch); early stopping or the budget may end sooner.
        loss: mean training loss over the last 50 steps (None before the first step).
        elapsed_seconds: since the call started.
        eta_seconds: estimated time left (planned steps at the measured pace, capped by the time budget).
        validation: the latest validation metrics (``loss``, ``recall@10``), when there was one.
    """

    stage: str
    epoch: int
    step: int
    total_steps: int
    loss: float | None
    elapsed_seconds: float
    eta_seconds: float | None
    validation: dict[str, float] | None = None


ProgressCallback = Callable[[TrainProgress], None]


@dataclass
class TrainInputs:
    """Everything read from the workspace before the model is loaded (the workspace is closed while training)."""

    workspace: Path
    base_model: str
    texts: dict[str, str]
    pairs: PairSet
    stats: BehaviourStats
    fingerprint: dict[str, Any]


def _conflict_keys(product_id: str, text: str) -> frozenset[str]:
    """Two products sharing a key must not meet in one batch: each would be the other's (false) negative."""
    words = " ".join(sorted(colourless(text)))
    return frozenset({f"id:{base_code(product_id)}", f"text:{words}"})


def _batches(
    rows: Sequence[tuple[str, ...]], keys: Mapping[str, frozenset[str]], batch_size: int, order: Sequence[int]
) -> list[list[int]]:
    """Cut rows (pairs or triplets of product ids) into batches in which no product, variant or colour twin occurs
    twice, so that every in-batch negative is a true negative. Batches of one row (no negative) are left out."""
    open_batches: list[tuple[list[int], set[str]]] = []
    done: list[list[int]] = []
    for index in order:
        row_keys = set().union(*(keys[p] for p in rows[index]))
        for members, used in open_batches:
            if not (used & row_keys):
                members.append(index)
                used |= row_keys
                break
        else:
            open_batches.append(([index], set(row_keys)))
        if len(open_batches[0][0]) >= batch_size:
            done.append(open_batches.pop(0)[0])
        elif len(open_batches) > 8:  # a crowded window: close the fullest rather than scan ever more batches
            fullest = max(range(len(open_batches)), key=lambda i: len(open_batches[i][0]))
            done.append(open_batches.pop(fullest)[0])
    done.extend(members for members, _ in open_batches)
    return [b for b in done if len(b) >= 2]


def pick_device(device: str | None) -> str:
    import torch

    if device is not None:
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _loss_class() -> Any:
    import importlib

    # sentence-transformers >= 6 moved the losses; older releases keep them at the top level
    for module in ("sentence_transformers.sentence_transformer.losses", "sentence_transformers.losses"):
        try:
            return importlib.import_module(module).MultipleNegativesRankingLoss
        except (ImportError, AttributeError):
            continue
    raise ImportError("sentence-transformers has no MultipleNegativesRankingLoss")


class FineTuner:
    """The fine-tuning loop: batches, loss, validation, early stopping, time budget, best checkpoint."""

    def __init__(self, inputs: TrainInputs, config: TrainConfig, device: str, started: float) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self.torch = torch
        self.inputs = inputs
        self.config = config
        self.device = device
        self.started = started
        _, target = resolve_model(inputs.base_model)
        if Path(target).is_dir():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model must never reach for the hub
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # no "Loading weights" bar in the middle of the CLI's progress
        try:
            self.model = SentenceTransformer(target, device=device)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"--model {inputs.base_model}: cannot load sentence-transformers model: {exc}") from None
        self.base_max_seq_length = self.model.max_seq_length
        self.model.max_seq_length = min(config.max_seq_length, self.base_max_seq_length or config.max_seq_length)
        if config.freeze_embeddings:
            for module in self.model.modules():
                embeddings = getattr(module, "word_embeddings", None)
                if embeddings is not None and hasattr(embeddings, "weight"):
                    embeddings.weight.requires_grad = False
        self.loss = _loss_class()(self.model, scale=config.scale)
        texts = inputs.texts
        self.keys = {p: _conflict_keys(p, texts[p]) for p in inputs.pairs.products}
        self.pool = inputs.pairs.products  # retrieval candidates of the validation metric
        partners: dict[str, set[str]] = {}
        held = set(inputs.pairs.held_out)
        for pair in inputs.pairs.validation:
            for a, b in ((pair.left, pair.right), (pair.right, pair.left)):
                if a in held:
                    partners.setdefault(a, set()).add(b)
        queries = sorted(partners)
        if len(queries) > config.max_validation_queries:
            picked = np.random.default_rng(config.seed + 1).choice(
                len(queries), size=config.max_validation_queries, replace=False
            )
            queries = sorted(queries[i] for i in picked.tolist())
        self.val_queries = queries
        self.val_partners = partners

    # -- helpers ----------------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _features(self, ids: Sequence[str]) -> dict[str, Any]:
        texts = [self.inputs.texts[p] for p in ids]
        prepare = getattr(self.model, "preprocess", None) or self.model.tokenize  # renamed in sentence-transformers 6
        features = prepare(texts)
        return {k: v.to(self.device) if hasattr(v, "to") else v for k, v in features.items()}

    def _batch_loss(self, rows: Sequence[tuple[str, ...]]) -> Any:
        columns = list(zip(*rows, strict=True))
        return self.loss([self._features(column) for column in columns], None)

    def hard_negatives(self, pairs: Sequence[TrainPair]) -> dict[str, str]:
        """Per anchor product, the most text-similar product (base encoder) never bought with it."""
        stats = self.inputs.stats
        pool = list(self.inputs.texts)
        vectors = self._encode(pool)
        position = {p: i for i, p in enumerate(pool)}
        anchors = sorted({p for pair in pairs for p in (pair.left, pair.right)})
        negatives: dict[str, str] = {}
        for start in range(0, len(anchors), 512):
            chunk = anchors[start : start + 512]
            sims = vectors[[position[a] for a in chunk]] @ vectors.T
            top = np.argsort(-sims, axis=1)[:, :50]
            for anchor, candidates in zip(chunk, top, strict=True):
                codes, _, _ = stats.neighbour_codes(anchor, min_count=1)
                bought = set(stats.names_of(codes))
                for c in candidates.tolist():
                    other = pool[c]
                    if other != anchor and other not in bought and not (self.keys[anchor] & self._keys(other)):
                        negatives[anchor] = other
                        break
        return negatives

    def _with_negatives(self, rows: list[tuple[str, ...]], negatives: Mapping[str, str]) -> list[tuple[str, ...]]:
        """Triplets (anchor, positive, hard negative). A row whose anchor has no negative, or whose negative clashes
        with a product of the batch (it would punish a true pair), is left out of this step; if fewer than two rows
        remain, the plain pairs are used."""
        used = set().union(*(self._keys(p) for row in rows for p in row))
        out: list[tuple[str, ...]] = []
        for anchor, positive in rows:
            negative = negatives.get(anchor)
            if negative is None or self._keys(negative) & used:
                continue
            used |= self._keys(negative)
            out.append((anchor, positive, negative))
        return out if len(out) >= 2 else rows

    def _keys(self, product_id: str) -> frozenset[str]:
        if product_id not in self.keys:
            self.keys[product_id] = _conflict_keys(product_id, self.inputs.texts[product_id])
        return self.keys[product_id]

    def _encode(self, ids: Sequence[str]) -> np.ndarray:
        vectors = self.model.encode(
            [self.inputs.texts[p] for p in ids],
            batch_size=128,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def validate(self) -> dict[str, float]:
        """Validation loss (MultipleNegativesRankingLoss over the validation pairs) and recall@10 of held-out
        products' partners among every paired product."""
        torch = self.torch
        started = time.perf_counter()
        self.model.eval()
        rows = [(p.left, p.right) for p in self.inputs.pairs.validation]
        total, weight = 0.0, 0
        with torch.no_grad():
            for batch in _batches(rows, self.keys, self.config.batch_size, range(len(rows))):
                total += float(self._batch_loss([rows[i] for i in batch]).item()) * len(batch)
                weight += len(batch)
        metrics = {"loss": total / weight if weight else float("nan")}
        if self.val_queries:
            vectors = self._encode(self.pool)
            position = {p: i for i, p in enumerate(self.pool)}
            sims = vectors[[position[q] for q in self.val_queries]] @ vectors.T
            for row, query in enumerate(self.val_queries):
                sims[row, position[query]] = -np.inf
            top = np.argpartition(-sims, kth=min(10, sims.shape[1] - 1), axis=1)[:, :10]  # order is not needed
            recalls = [
                recall_at_k([self.pool[c] for c in top[row].tolist()], self.val_partners[q], 10)
                for row, q in enumerate(self.val_queries)
            ]
            metrics["recall@10"] = float(np.mean(recalls))
        metrics["seconds"] = time.perf_counter() - started
        self.model.train()
        return metrics

    def better(self, new: dict[str, float], best: dict[str, float] | None) -> bool:
        if best is None:
            return True
        if self.config.early_stopping == "recall@10" and "recall@10" in new:
            return new["recall@10"] > best["recall@10"] + 1e-6
        return new["loss"] < best["loss"] - 1e-6

    # -- the loop ---------------------------------------------------------------------------------------------
    def run(self, progress: ProgressCallback | None) -> dict[str, Any]:
        torch = self.torch
        config = self.config
        pairs = self.inputs.pairs
        negatives = self.hard_negatives(pairs.train) if config.hard_negatives else {}
        rows: list[tuple[str, ...]] = []
        for pair in pairs.train:
            rows.append((pair.left, pair.right))
        for product in {p for row in rows for p in row}:
            self._keys(product)
        rng = np.random.default_rng(config.seed)
        first = _batches(rows, self.keys, config.batch_size, rng.permutation(len(rows)).tolist())
        steps_per_epoch = len(first)
        if steps_per_epoch == 0:
            raise InvalidInput(
                f"only {len(rows)} training pair(s): too few for in-batch negatives; lower --min-count/--min-lift"
            )
        total_steps = steps_per_epoch * config.epochs
        eval_every = max(1, steps_per_epoch // config.evaluations_per_epoch)
        budget = None if config.time_budget_minutes is None else config.time_budget_minutes * 60.0
        has_validation = bool(pairs.validation)

        def report(stage: str, epoch: int, step: int, loss: float | None, val: dict[str, float] | None) -> None:
            if progress is None:
                return
            pace = (self.elapsed() - train_started) / step if step else None
            eta = None if pace is None else pace * (total_steps - step)
            if eta is not None and budget is not None:
                eta = max(0.0, min(eta, budget - self.elapsed()))
            progress(TrainProgress(stage, epoch, step, total_steps, loss, self.elapsed(), eta, val))

        train_started = self.elapsed()
        history: list[dict[str, Any]] = []
        baseline: dict[str, float] | None = None
        best: dict[str, float] | None = None
        best_state: dict[str, Any] | None = None
        best_step = 0
        if has_validation:
            report("baseline", 0, 0, None, None)
            baseline = self.validate()
            best = baseline  # the base model is the checkpoint to beat
            history.append({"step": 0, "epoch": 0, **baseline})
            report("baseline", 0, 0, None, baseline)
        last_eval_seconds = baseline["seconds"] if baseline else 0.0
        train_started = self.elapsed()

        torch.manual_seed(config.seed)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
        warmup = int(config.warmup_share * total_steps)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        self.model.train()
        step = 0
        stopped = "completed"
        recent: list[float] = []
        without_gain = 0
        epoch = 0
        last_validated_step = 0
        for epoch in range(1, config.epochs + 1):
            order = rng.permutation(len(rows)).tolist()
            batches = first if epoch == 1 else _batches(rows, self.keys, config.batch_size, order)
            for batch in batches:
                if budget is not None and self.elapsed() + last_eval_seconds + 1.0 >= budget:
                    stopped = "time budget"
                    break
                flip = rng.random(len(batch)) < 0.5  # pairs are symmetric: either side may be the anchor
                batch_rows = [rows[i][::-1] if f else rows[i] for i, f in zip(batch, flip.tolist(), strict=True)]
                if negatives:
                    batch_rows = self._with_negatives(batch_rows, negatives)
                loss = self._batch_loss(batch_rows)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                recent = [*recent[-49:], float(loss.item())]
                report("train", epoch, step, float(np.mean(recent)), None)
                if has_validation and step % eval_every == 0:
                    val = self.validate()
                    last_eval_seconds = val["seconds"]
                    last_validated_step = step
                    history.append({"step": step, "epoch": epoch, "train_loss": float(np.mean(recent)), **val})
                    report("validate", epoch, step, float(np.mean(recent)), val)
                    if self.better(val, best):
                        best, best_step, without_gain = val, step, 0
                        best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
                    else:
                        without_gain += 1
                        if without_gain >= config.patience:
                            stopped = "early stopping"
                            break
            if stopped != "completed":
                break
        if has_validation and step > last_validated_step:
            val = self.validate()
            history.append({"step": step, "epoch": epoch, "train_loss": float(np.mean(recent)), **val})
            report("validate", epoch, step, float(np.mean(recent)) if recent else None, val)
            if self.better(val, best):
                best, best_step = val, step
                best_state = None  # the current weights are the best
        if not has_validation:
            best_step = step
        elif best_state is not None:
            self.model.load_state_dict(best_state)
        elif best_step == 0:
            # Nothing beat the base model on the validation products: keep the base weights, say so in the report.
            self.model = self._reload_base()
        self.model.max_seq_length = self.base_max_seq_length
        return {
            "epochs": epoch,
            "steps": step,
            "total_steps": total_steps,
            "stopped": stopped,
            "best_step": best_step,
            "metrics": {
                "baseline": _rounded(baseline),
                "best": _rounded(best),
                "train_loss": round(float(np.mean(recent)), 6) if recent else None,
            },
            "history": [_rounded(h) for h in history],
            "hard_negatives": len(negatives),
        }

    def _reload_base(self) -> Any:
        from sentence_transformers import SentenceTransformer

        _, target = resolve_model(self.inputs.base_model)
        return SentenceTransformer(target, device=self.device)


def _rounded(values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {k: round(v, 6) if isinstance(v, float) and math.isfinite(v) else v for k, v in values.items()}
