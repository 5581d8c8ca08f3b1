"""Training pairs: which co-purchased products the encoder learns from, and the options of a training run.

:func:`build_pairs` picks pairs from the workspace's behaviour statistics (count, lift and NPMI thresholds; variant
pairs dropped, see :func:`semassoc.ranking.variants.variant_reason`) and splits them by product: the validation
pairs are those touching a held-out product that training never sees, like a new product.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from semassoc.behaviour.stats import BehaviourStats
from semassoc.behaviour.weightings import lift, npmi
from semassoc.errors import InvalidInput
from semassoc.ranking.variants import variant_reason

__all__ = ["PairSet", "TrainConfig", "TrainPair", "build_pairs"]


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
