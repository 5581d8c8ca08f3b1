"""Fine-tune the workspace's encoder on co-purchase pairs, so that text vectors carry what shoppers buy together.

Text alone knows that two mugs are alike; it does not know that people who buy a cake stand also buy cake cases.
Training the Transformer on strong co-purchase pairs (in-batch negatives, sentence-transformers'
``MultipleNegativesRankingLoss``) moves that knowledge into the vectors, so even a product with no history gets
behaviour-aware neighbours from its text alone.

The pieces:

- :func:`build_pairs` picks training pairs from the workspace's behaviour statistics (count, lift and NPMI
  thresholds; variant pairs dropped, see :func:`variant_reason`) and splits them by product: the validation pairs
  are those touching a held-out product that training never sees, like a new product;
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

import copy
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from semassoc.behaviour.stats import BehaviourStats
from semassoc.behaviour.weightings import lift, npmi
from semassoc.catalog import Product
from semassoc.errors import InvalidInput, NotFound, StoreUnavailable
from semassoc.io import replace_directory
from semassoc.text.encoder import resolve_model
from semassoc.text.prompts import PromptSet
from semassoc.workspace import Workspace

__all__ = [
    "COLOUR_WORDS",
    "LINEAGE_FILE",
    "PairSet",
    "TrainConfig",
    "TrainPair",
    "TrainProgress",
    "TrainReport",
    "base_code",
    "build_pairs",
    "train_encoder",
    "variant_reason",
]

#: Where a tuned model's history is written, inside its directory.
LINEAGE_FILE = "lineage.json"
LINEAGE_SCHEMA = 1

#: Words that make two product texts differ only by colour (or finish): such pairs teach nothing about behaviour.
COLOUR_WORDS = frozenset(
    {
        "red",
        "blue",
        "green",
        "yellow",
        "pink",
        "purple",
        "orange",
        "white",
        "black",
        "grey",
        "gray",
        "brown",
        "cream",
        "ivory",
        "beige",
        "gold",
        "golden",
        "silver",
        "bronze",
        "copper",
        "turquoise",
        "teal",
        "aqua",
        "navy",
        "lilac",
        "lavender",
        "mauve",
        "violet",
        "magenta",
        "fuchsia",
        "peach",
        "coral",
        "mint",
        "lime",
        "olive",
        "khaki",
        "multicolour",
        "multicolor",
        "assorted",
        "pastel",
        "spotty",
        "polkadot",
        "striped",
        "chocolate",
    }
)

_WORD = re.compile(r"\w+", re.UNICODE)
_TRAILING_LETTERS = re.compile(r"[A-Za-z]+$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


# ======================================================================================================== config


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of pair building and fine-tuning (all recorded in ``lineage.json``).

    The defaults are sized so that the bundled all-MiniLM-L6-v2 trains on Online Retail 2009-2010 (about 4,000
    products, 15,000 baskets) in under 15 minutes on 2 CPU cores; a GPU is used automatically when present.

    Attributes:
        min_count: fewest baskets a pair must share.
        min_lift: lowest lift (how much more often together than by chance).
        min_npmi: lowest normalised PMI, in [-1, 1].
        max_per_product: a product keeps at most this many pairs (its strongest by NPMI), so bestsellers do not
            fill the training set.
        max_pairs: most pairs kept in all (strongest first), training and validation together.
        drop_variants: leave out pairs of variants of one product (same base code, or texts differing only by
            colour words or near-identical); see :func:`variant_reason`.
        max_text_overlap: word Jaccard of the two rendered texts at or above which a pair counts as near-identical.
        validation_share: share of the paired products held out; validation pairs are those touching one.
        max_validation_queries: held-out products used for the retrieval metric (seeded sample).
        epochs: passes over the training pairs (early stopping may end sooner).
        batch_size: pairs per step; every other pair of the batch is a negative.
        learning_rate: AdamW peak learning rate (linear warm-up over ``warmup_share`` of the steps, then linear
            decay to 0).
        warmup_share: share of the planned steps spent warming up.
        weight_decay: AdamW weight decay.
        max_seq_length: tokens read per text while training (titles fit in 64; the saved model keeps the base
            model's own window).
        scale: MultipleNegativesRankingLoss scale (inverse temperature of the cosine similarities).
        freeze_embeddings: keep the token embedding matrix fixed (half of MiniLM's weights): steps are about
            twice as fast on a CPU, and words seen only in new products keep the meaning the base model gave them.
        hard_negatives: add, per pair, the product most text-similar to the anchor (by the base encoder) that was
            never bought with it, as an extra negative.
        evaluations_per_epoch: validations per epoch (early stopping and the kept checkpoint use them).
        early_stopping: ``"recall@10"`` (held-out products' partners found in the top 10 of all paired products)
            or ``"loss"`` (validation loss).
        patience: validations without improvement before training stops.
        time_budget_minutes: stop cleanly when this much time has passed (from the start of the call, keeping
            room for one last validation) and keep the best checkpoint; None: no limit.
        seed: seeds the validation split, the pair order, the orientation of the pairs and torch.
    """

    min_count: int = 3
    min_lift: float = 2.0
    min_npmi: float = 0.1
    max_per_product: int = 10
    max_pairs: int = 20_000
    drop_variants: bool = True
    max_text_overlap: float = 0.8
    validation_share: float = 0.1
    max_validation_queries: int = 500
    epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 5e-5
    warmup_share: float = 0.1
    weight_decay: float = 0.01
    max_seq_length: int = 64
    scale: float = 20.0
    hard_negatives: bool = False
    freeze_embeddings: bool = True
    evaluations_per_epoch: int = 3
    early_stopping: Literal["recall@10", "loss"] = "recall@10"
    patience: int = 2
    time_budget_minutes: float | None = 12.0
    seed: int = 0

    def validate(self) -> None:
        """Raise InvalidInput naming the first bad option."""
        checks = [
            (self.min_count >= 1, "--min-count must be >= 1"),
            (self.min_lift >= 0, "--min-lift must be >= 0"),
            (-1.0 <= self.min_npmi <= 1.0, "--min-npmi must be in [-1, 1]"),
            (self.max_per_product >= 1, "--max-per-product must be >= 1"),
            (self.max_pairs >= 1, "--max-pairs must be >= 1"),
            (0.0 < self.max_text_overlap <= 1.0, "--max-text-overlap must be in (0, 1]"),
            (0.0 <= self.validation_share < 1.0, "--validation-share must be in [0, 1)"),
            (self.max_validation_queries >= 1, "max_validation_queries must be >= 1"),
            (self.epochs >= 1, "--epochs must be >= 1"),
            (self.batch_size >= 2, "--batch-size must be >= 2 (in-batch negatives need a second pair)"),
            (self.learning_rate > 0, "--learning-rate must be > 0"),
            (0.0 <= self.warmup_share < 1.0, "warmup_share must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.max_seq_length >= 8, "--max-seq-length must be >= 8"),
            (self.scale > 0, "scale must be > 0"),
            (self.evaluations_per_epoch >= 1, "evaluations_per_epoch must be >= 1"),
            (self.early_stopping in ("recall@10", "loss"), "--early-stopping must be 'recall@10' or 'loss'"),
            (self.patience >= 1, "--patience must be >= 1"),
            (
                self.time_budget_minutes is None or self.time_budget_minutes > 0,
                "--time-budget must be > 0 minutes",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidInput(message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def pair_options(self) -> dict[str, Any]:
        """The options that decide which pairs are built (part of the data fingerprint)."""
        names = ("min_count", "min_lift", "min_npmi", "max_per_product", "max_pairs", "drop_variants")
        return {n: getattr(self, n) for n in (*names, "max_text_overlap", "validation_share", "seed")}


# ========================================================================================================= pairs


@dataclass(frozen=True)
class TrainPair:
    """Two products bought together, with the statistics that selected them (``left < right``)."""

    left: str
    right: str
    count: int
    lift: float
    npmi: float


@dataclass
class PairSet:
    """The pairs :func:`build_pairs` kept, split by product, and what it dropped.

    Attributes:
        train: pairs between training products only.
        validation: pairs touching a held-out product (one side may be a training product).
        held_out: the held-out products (sorted); no training pair mentions them.
        considered: pairs of catalog products with count >= ``min_count``, before any other rule.
        dropped: pairs left out, by reason.
    """

    train: list[TrainPair]
    validation: list[TrainPair]
    held_out: list[str]
    considered: int
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def products(self) -> list[str]:
        """Every product of a kept pair (sorted)."""
        return sorted({p for pair in (*self.train, *self.validation) for p in (pair.left, pair.right)})

    def summary(self) -> dict[str, Any]:
        return {
            "considered": self.considered,
            "train_pairs": len(self.train),
            "validation_pairs": len(self.validation),
            "products": len(self.products),
            "held_out_products": len(self.held_out),
            "dropped": dict(self.dropped),
        }


def base_code(product_id: str) -> str:
    """The product id without trailing letters when digits come before them (85123A, 85123B -> 85123).

    Example:
        >>> base_code("85123A"), base_code("79323LP"), base_code("POST"), base_code("SKU-1")
        ('85123', '79323', 'POST', 'SKU-1')
    """
    stripped = _TRAILING_LETTERS.sub("", product_id)
    return stripped if stripped and stripped[-1].isdigit() else product_id


def _words(text: str) -> frozenset[str]:
    return frozenset(w.lower() for w in _WORD.findall(text))


def _colourless(text: str) -> frozenset[str]:
    return frozenset(w for w in _words(text) if w not in COLOUR_WORDS)


def variant_reason(left: str, right: str, left_text: str, right_text: str, max_text_overlap: float = 0.8) -> str | None:
    """Why a pair is two variants of one product rather than two products bought together (None: it is not).

    - ``"same base code"``: the ids differ only by trailing letters (85123A / 85123B);
    - ``"colour variant"``: the rendered texts differ only by colour words (RED ... MUG / BLUE ... MUG);
    - ``"near-identical text"``: word Jaccard of the texts >= ``max_text_overlap``.

    Example:
        >>> variant_reason("1", "2", "RED SPOTTY MUG", "BLUE SPOTTY MUG")
        'colour variant'
        >>> variant_reason("1", "2", "CAKE STAND", "CAKE CASES") is None
        True
    """
    if base_code(left) == base_code(right):
        return "same base code"
    a, b = _colourless(left_text), _colourless(right_text)
    if a and a == b:
        return "colour variant"
    wa, wb = _words(left_text), _words(right_text)
    union = len(wa | wb)
    if union and len(wa & wb) / union >= max_text_overlap:
        return "near-identical text"
    return None


def build_pairs(stats: BehaviourStats, texts: Mapping[str, str], config: TrainConfig | None = None) -> PairSet:
    """Training and validation pairs from behaviour statistics.

    A pair of catalog products (both in ``texts``) is kept when it shares >= ``min_count`` baskets with lift >=
    ``min_lift`` and NPMI >= ``min_npmi``, is not a pair of variants (``drop_variants``), fits the per-product cap
    (strongest pairs first by NPMI, then count) and the overall ``max_pairs``. A seeded ``validation_share`` of the
    kept products is held out: pairs touching one are validation pairs, the rest training pairs.

    Args:
        stats: behaviour statistics (e.g. ``BehaviourStats.open(ws.behaviour_dir)``).
        texts: rendered document text of each catalog product, by product id.
        config: thresholds, caps, split and seed.

    Returns:
        PairSet (deterministic for a given input and seed).
    """
    config = config or TrainConfig()
    config.validate()
    item_ids, item_counts = stats.item_ids_and_counts()
    n = stats.info().baskets
    dropped: dict[str, int] = {}

    def drop(reason: str, amount: int = 1) -> None:
        if amount:
            dropped[reason] = dropped.get(reason, 0) + amount

    # Every pair once (from its smaller code: codes follow the sorted ids), thresholds applied as array operations.
    in_catalog = np.array([item in texts for item in item_ids.tolist()], dtype=bool)
    lefts, rights, counts = [], [], []
    for code in np.flatnonzero(in_catalog).tolist():
        cols, pair, _ = stats.neighbour_codes(str(item_ids[code]), min_count=config.min_count)
        later = (cols > code) & in_catalog[cols]
        lefts.append(np.full(int(later.sum()), code, dtype=np.int64))
        rights.append(cols[later])
        counts.append(pair[later])
    left = np.concatenate(lefts) if lefts else np.zeros(0, np.int64)
    right = np.concatenate(rights) if rights else np.zeros(0, np.int64)
    pair = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    considered = int(pair.size)
    lifts = lift(pair, item_counts[left], item_counts[right], n)
    npmis = npmi(pair, item_counts[left], item_counts[right], n)
    strong = lifts >= config.min_lift
    drop("lift below --min-lift", int((~strong).sum()))
    keep = strong & (npmis >= config.min_npmi)
    drop("NPMI below --min-npmi", int((strong & ~keep).sum()))
    left, right, pair, lifts, npmis = left[keep], right[keep], pair[keep], lifts[keep], npmis[keep]
    # Strongest first (NPMI, then count; ids break ties, so the order is deterministic).
    order = np.lexsort((right, left, -pair, -npmis))

    degree: dict[str, int] = {}
    kept: list[TrainPair] = []
    for position, i in enumerate(order.tolist()):
        if len(kept) >= config.max_pairs:
            drop("over --max-pairs", int(order.size) - position)  # the weaker rest, variants or not
            break
        a, b = str(item_ids[left[i]]), str(item_ids[right[i]])
        if degree.get(a, 0) >= config.max_per_product or degree.get(b, 0) >= config.max_per_product:
            drop("over --max-per-product")
            continue
        if config.drop_variants:  # checked only for pairs that would be kept: text comparisons are the slow part
            reason = variant_reason(a, b, texts[a], texts[b], config.max_text_overlap)
            if reason is not None:
                drop(reason)
                continue
        degree[a] = degree.get(a, 0) + 1
        degree[b] = degree.get(b, 0) + 1
        kept.append(TrainPair(a, b, int(pair[i]), float(lifts[i]), float(npmis[i])))

    products = sorted(degree)
    n_held = round(config.validation_share * len(products))
    held: set[str] = set()
    if n_held:
        picked = np.random.default_rng(config.seed).choice(len(products), size=n_held, replace=False)
        held = {products[i] for i in picked.tolist()}
    train = [p for p in kept if p.left not in held and p.right not in held]
    validation = [p for p in kept if p.left in held or p.right in held]
    return PairSet(train, validation, sorted(held), considered, dropped)


# ====================================================================================================== progress


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


# ======================================================================================================== report


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


# ====================================================================================================== training


@dataclass
class _Inputs:
    """Everything read from the workspace before the model is loaded (the workspace is closed while training)."""

    workspace: Path
    base_model: str
    texts: dict[str, str]
    pairs: PairSet
    stats: BehaviourStats
    fingerprint: dict[str, Any]


def _read_workspace(workspace: str | Path | None, model: str | None, config: TrainConfig) -> _Inputs:
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
        return _Inputs(ws.path, base_model, texts, build_pairs(stats, texts, config), stats, fingerprint)


def _data_fingerprint(inputs: _Inputs, config: TrainConfig) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(inputs.fingerprint, sort_keys=True, default=str).encode("utf-8"))
    digest.update(json.dumps(config.pair_options(), sort_keys=True).encode("utf-8"))
    for pair in (*inputs.pairs.train, *inputs.pairs.validation):
        digest.update(f"{pair.left}\0{pair.right}\0{inputs.texts[pair.left]}\0{inputs.texts[pair.right]}\n".encode())
    return digest.hexdigest()


def _conflict_keys(product_id: str, text: str) -> frozenset[str]:
    """Two products sharing a key must not meet in one batch: each would be the other's (false) negative."""
    colourless = " ".join(sorted(_colourless(text)))
    return frozenset({f"id:{base_code(product_id)}", f"text:{colourless}"})


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


def _pick_device(device: str | None) -> str:
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
    try:  # sentence-transformers >= 6 moved the losses; older releases keep them at the top level
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:
        from sentence_transformers.losses import MultipleNegativesRankingLoss
    return MultipleNegativesRankingLoss


class _Trainer:
    """The fine-tuning loop: batches, loss, validation, early stopping, time budget, best checkpoint."""

    def __init__(self, inputs: _Inputs, config: TrainConfig, device: str, started: float) -> None:
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
        out = []
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
            top = np.argpartition(-sims, kth=min(10, sims.shape[1] - 1), axis=1)[:, :10]
            recalls = [
                len({self.pool[c] for c in top[row].tolist()} & self.val_partners[q]) / len(self.val_partners[q])
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


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("semassoc", "sentence-transformers", "torch", "transformers"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return out


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    if device == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device


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
    fingerprint = _data_fingerprint(inputs, config)
    import torch

    torch.manual_seed(config.seed)
    chosen = _pick_device(device)
    trainer = _Trainer(inputs, config, chosen, started)
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
            "device": _device_name(chosen),
        },
        "versions": _versions(),
    }
    _save(trainer.model, destination, lineage)
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


def _save(model: Any, destination: Path, lineage: dict[str, Any]) -> None:
    """Write the model and its lineage into place atomically (never half a model)."""

    def write(tmp: Path) -> None:
        model.save(str(tmp))
        (tmp / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2, default=str) + "\n", encoding="utf-8")

    try:
        replace_directory(destination, write)
    except OSError as exc:
        raise StoreUnavailable(f"{destination}: cannot write the tuned model: {exc}") from None
