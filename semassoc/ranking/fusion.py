"""Fusion of ranked signals: small pure functions over per-signal scores and ranks.

Signals are dicts ``{product_id: score}`` (higher is better). Calibration turns each into [0, 1]; fusion combines
them with validated weights (a weighted sum of calibrated scores, or reciprocal-rank fusion). Nothing here touches a
store or a file, so every rule is unit-testable with numbers worked out by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np

from semassoc.behaviour import weightings
from semassoc.errors import InvalidInput

Signal = Mapping[str, float]


def max_normalise(signal: Signal) -> dict[str, float]:
    """Scale non-negative scores so that the best is 1 (negative scores become 0).

    Example:
        >>> max_normalise({"a": 4.0, "b": 1.0, "c": -2.0})
        {'a': 1.0, 'b': 0.25, 'c': 0.0}
    """
    top = max((v for v in signal.values() if v > 0), default=0.0)
    if top <= 0:
        return {k: 0.0 for k in signal}
    return {k: max(v, 0.0) / top for k, v in signal.items()}


def clip_unit(signal: Signal) -> dict[str, float]:
    """Clip scores that are already on a [0, 1] scale (cosine similarity) without rescaling them.

    Text similarity keeps its absolute meaning: 0.9 is a near-duplicate whatever else is in the list.
    """
    return {k: min(max(v, 0.0), 1.0) for k, v in signal.items()}


def ranks(signal: Signal) -> dict[str, int]:
    """1-based ranks, best first; ties broken by product id for determinism.

    Example:
        >>> ranks({"a": 0.2, "b": 0.9, "c": 0.2})
        {'b': 1, 'a': 2, 'c': 3}
    """
    order = sorted(signal.items(), key=lambda kv: (-kv[1], kv[0]))
    return {key: position for position, (key, _) in enumerate(order, start=1)}


def weighted_sum(signals: Mapping[str, Signal], weights: Mapping[str, float]) -> dict[str, float]:
    """Sum of ``weights[name] * signals[name][item]`` over signals (an item missing from a signal scores 0 there).

    Example:
        >>> weighted_sum({"text": {"a": 1.0, "b": 0.5}, "behaviour": {"b": 1.0}}, {"text": 0.5, "behaviour": 1.0})
        {'a': 0.5, 'b': 1.25}
    """
    _check_weights(weights)
    out: dict[str, float] = {}
    for name, signal in signals.items():
        weight = weights.get(name, 0.0)
        if weight == 0:
            continue
        for item, value in signal.items():
            out[item] = out.get(item, 0.0) + weight * value
    return dict(sorted(out.items()))


def reciprocal_rank_fusion(
    signals: Mapping[str, Signal], weights: Mapping[str, float], k0: float = 60.0
) -> dict[str, float]:
    """Weighted reciprocal-rank fusion: ``sum weights[s] / (k0 + rank_s(item))`` over the signals listing the item.

    Example:
        >>> r = reciprocal_rank_fusion({"t": {"a": 0.9, "b": 0.1}, "b": {"b": 5.0}}, {"t": 1.0, "b": 1.0}, k0=1)
        >>> round(r["a"], 4), round(r["b"], 4)
        (0.5, 0.8333)
    """
    _check_weights(weights)
    if k0 < 0:
        raise InvalidInput(f"RRF constant must be >= 0, not {k0}")
    out: dict[str, float] = {}
    for name, signal in signals.items():
        weight = weights.get(name, 0.0)
        if weight == 0:
            continue
        for item, rank in ranks(signal).items():
            out[item] = out.get(item, 0.0) + weight / (k0 + rank)
    return dict(sorted(out.items()))


def evidence_confidence(baskets: int, half_point: float) -> float:
    """How far to trust a product's own behaviour: ``n / (n + half_point)``, 0 for a new product, 0.5 at
    ``half_point`` baskets, towards 1 for a bestseller.

    Example:
        >>> evidence_confidence(0, 20), evidence_confidence(20, 20), round(evidence_confidence(180, 20), 2)
        (0.0, 0.5, 0.9)
    """
    if half_point <= 0:
        raise InvalidInput(f"the evidence half point must be > 0, not {half_point}")
    return baskets / (baskets + half_point) if baskets > 0 else 0.0


def popularity_prior(baskets: int, most: int) -> float:
    """Popularity on a log scale in [0, 1]: ``log1p(baskets) / log1p(most)``."""
    if most <= 0 or baskets <= 0:
        return 0.0
    return math.log1p(baskets) / math.log1p(most)


ASSOCIATIONS = ("count", "lift", "npmi", "cosine")


def association_scores(
    association: str, pair: np.ndarray, left: int, right: np.ndarray, baskets: int, shrink: float
) -> np.ndarray:
    """Score bought-together pairs of one query product (``left`` baskets) with neighbours (``right`` baskets each),
    ``pair`` shared baskets, out of ``baskets``; only associations above chance (lift > 1) score above 0.

    Example:
        >>> association_scores("count", np.array([5, 1]), 10, np.array([20, 1000]), 1000, 10.0).tolist()
        [5.0, 0.0]
    """
    pair = pair.astype(np.float64)
    right = right.astype(np.float64)
    lift = weightings.lift(pair, left, right, baskets)
    above = lift > 1
    if association == "count":
        score = pair
    elif association == "lift":  # log-lift shrunk towards 0 for pairs seen few times
        score = np.log(np.maximum(lift, 1.0)) * pair / (pair + shrink)
    elif association == "npmi":
        score = weightings.npmi(pair, left, right, baskets)
    elif association == "cosine":
        score = weightings.cosine(pair, left, right, baskets)
    else:
        raise InvalidInput(f"association must be one of {', '.join(ASSOCIATIONS)}, not {association!r}")
    return np.where(above, score, 0.0)


@dataclass(frozen=True)
class FusionWeights:
    """The knobs of ``related --mode auto``. The defaults were chosen with the evaluation harness on a validation
    split of Online Retail that ends before the test period (``benchmarks/tune_fusion.py``; see docs/fusion.md).

    Attributes:
        text: weight of text similarity for a product without behaviour (it fades to ``text_warm`` as evidence grows).
        text_warm: weight of text similarity for a product with plenty of behaviour.
        behaviour: weight of the product's own (calibrated) behavioural association, scaled by its evidence confidence.
        transfer: weight of behaviour borrowed from its text neighbours, scaled by (1 - evidence confidence).
        popularity: weight of the popularity prior (a tie-breaker).
        half_point: baskets at which a product's own behaviour gets confidence 0.5.
        shrink: pseudo-count of the lift shrinkage.
        association: how a bought-together pair is scored: ``count`` (shared baskets; within one query product the
            same ranking as confidence), ``lift`` (log-lift shrunk by ``shrink``), ``npmi`` or ``cosine``.
        method: ``"sum"`` (weighted sum of calibrated scores) or ``"rrf"`` (reciprocal-rank fusion).
        rrf_k: the RRF constant.
    """

    text: float = 1.0
    text_warm: float = 0.3
    behaviour: float = 1.0
    transfer: float = 0.3
    popularity: float = 0.05
    half_point: float = 20.0
    shrink: float = 10.0
    association: str = "count"
    method: str = "sum"
    rrf_k: float = 60.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            numeric = isinstance(value, float | int) and not isinstance(value, bool)
            if numeric and (not math.isfinite(value) or value < 0):
                raise InvalidInput(f"fusion weight {f.name} must be a finite number >= 0, not {value!r}")
        if self.association not in ASSOCIATIONS:
            raise InvalidInput(f"association must be one of {', '.join(ASSOCIATIONS)}, not {self.association!r}")
        if self.method not in ("sum", "rrf"):
            raise InvalidInput(f"fusion method must be 'sum' or 'rrf', not {self.method!r}")
        if self.half_point <= 0:
            raise InvalidInput("half_point must be > 0")

    def signal_weights(self, confidence: float) -> dict[str, float]:
        """Per-signal weights for a query product whose behaviour confidence is ``confidence``."""
        return {
            "text": self.text * (1 - confidence) + self.text_warm * confidence,
            "behaviour": self.behaviour * confidence,
            "transfer": self.transfer * (1 - confidence),
            "popularity": self.popularity,
        }


def fuse(signals: Mapping[str, Signal], weights: FusionWeights, confidence: float) -> dict[str, float]:
    """Combine calibrated signals for one query product with :class:`FusionWeights`."""
    per_signal = weights.signal_weights(confidence)
    if weights.method == "rrf":
        return reciprocal_rank_fusion(signals, per_signal, weights.rrf_k)
    return weighted_sum(signals, per_signal)


def _check_weights(weights: Mapping[str, float]) -> None:
    for name, value in weights.items():
        if not math.isfinite(value) or value < 0:
            raise InvalidInput(f"weight of signal {name!r} must be a finite number >= 0, not {value!r}")


@dataclass
class Candidates:
    """Per-signal scores of one query's candidates, and what the explanations need."""

    text: dict[str, float] = field(default_factory=dict)
    behaviour: dict[str, float] = field(default_factory=dict)
    transfer: dict[str, float] = field(default_factory=dict)
    counts: dict[str, tuple[int, float]] = field(default_factory=dict)  # item -> (pair count, lift) with the query
    via: dict[str, tuple[str, float, int]] = field(default_factory=dict)  # item -> (text neighbour, its sim, count)
