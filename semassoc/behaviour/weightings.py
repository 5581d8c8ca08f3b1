"""Association weightings: small pure functions of a pair count, the two product counts and the number of baskets.

The one implementation of count, support, confidence, lift, NPMI, cosine and Jaccard: behaviour statistics,
fusion, the related engine, the evaluation's truth and the training pairs all call these.

Example:
    >>> import numpy as np

#: Counts: an array, or one number for every pair (the query product's count).
Counts = np.ndarray | int | float
    >>> lift(np.array([2]), np.array([4]), np.array([5]), 20).tolist()
    [2.0]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

#: Counts: an array, or one number for every pair (the query product's count).
Counts = np.ndarray | int | float

__all__ = [
    "METRICS",
    "RANKED_METRICS",
    "Counts",
    "Weighting",
    "confidence",
    "cosine",
    "count",
    "jaccard",
    "lift",
    "npmi",
    "reverse_confidence",
    "support",
]

# Each takes arrays: pair = baskets holding both products, left = baskets holding the query product, right = baskets
# holding the neighbour, and the number of baskets n. They return float64 arrays of the same shape.


def count(pair: Counts, left: Counts, right: Counts, n: int) -> np.ndarray:
    """Number of baskets holding both products."""
    return np.asarray(pair, dtype=np.float64)


def support(pair: Counts, left: Counts, right: Counts, n: int) -> np.ndarray:
    """Share of baskets holding both: ``pair / n``."""
    return np.asarray(pair, dtype=np.float64) / n


def confidence(pair: Counts, left: Counts, right: Counts, n: int) -> np.ndarray:
    """P(neighbour | query product) = ``pair / left`` (rule query => neighbour)."""
    return np.asarray(pair, dtype=np.float64) / left


def reverse_confidence(pair: Counts, left: Counts, right: Counts, n: int) -> np.ndarray:
    """P(query product | neighbour) = ``pair / right`` (rule neighbour => query)."""
    return np.asarray(pair, dtype=np.float64) / right


def lift(pair: Counts, left: Counts, right: Counts, n: int) -> np.ndarray:
    """How much more often the two appear together than if independent: ``pair * n / (left * right)``."""
    return np.asarray(pair, dtype=np.float64) * n / (np.asarray(left, dtype=np.float64) * right)


def npmi(pair: Counts, left: Counts, right: Counts, n: int) -> np.ndarray:
    """Normalised pointwise mutual information in [-1, 1]: ``log(p_ab / (p_a p_b)) / -log(p_ab)``.

    A pair present in every basket (p_ab = 1) gets 1.
    """
    p_ab = np.asarray(pair, dtype=np.float64) / n
    pmi = np.log(np.asarray(pair, dtype=np.float64) * n / (np.asarray(left, dtype=np.float64) * right))
    denominator = -np.log(p_ab)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, pmi / np.where(denominator > 0, denominator, 1.0), 1.0)


def cosine(pair: Counts, left: Counts, right: Counts, n: int) -> np.ndarray:
    """Cosine of the two products' basket vectors: ``pair / sqrt(left * right)``."""
    return np.asarray(pair, dtype=np.float64) / np.sqrt(np.asarray(left, dtype=np.float64) * right)


def jaccard(pair: Counts, left: Counts, right: Counts, n: int) -> np.ndarray:
    """Baskets with both over baskets with either: ``pair / (left + right - pair)``."""
    both = np.asarray(pair, dtype=np.float64)
    return both / (np.asarray(left, dtype=np.float64) + right - both)


#: A weighting: ``f(pair, left, right, n)``.
Weighting = Callable[[Counts, Counts, Counts, int], np.ndarray]

#: Metrics a neighbour query can rank by.
METRICS: Mapping[str, Weighting] = {
    "count": count,
    "support": support,
    "confidence": confidence,
    "reverse_confidence": reverse_confidence,
    "lift": lift,
    "npmi": npmi,
    "cosine": cosine,
    "jaccard": jaccard,
}
#: Ranking by support equals ranking by count, so the builder keeps top-k lists for these only.
RANKED_METRICS = ("count", "confidence", "reverse_confidence", "lift", "npmi", "cosine", "jaccard")
