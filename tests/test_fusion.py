"""Fusion functions against numbers worked out by hand."""

import math

import numpy as np
import pytest

from semassoc.errors import InvalidInput
from semassoc.ranking.fusion import (
    FusionWeights,
    association_scores,
    clip_unit,
    evidence_confidence,
    fuse,
    max_normalise,
    popularity_prior,
    ranks,
    reciprocal_rank_fusion,
    weighted_sum,
)


def test_calibration():
    assert max_normalise({"a": 4.0, "b": 1.0, "c": -2.0}) == {"a": 1.0, "b": 0.25, "c": 0.0}
    assert max_normalise({"a": 0.0}) == {"a": 0.0}
    assert clip_unit({"a": 1.2, "b": -0.1, "c": 0.4}) == {"a": 1.0, "b": 0.0, "c": 0.4}
    assert ranks({"a": 0.2, "b": 0.9, "c": 0.2}) == {"b": 1, "a": 2, "c": 3}


def test_weighted_sum_and_rrf_by_hand():
    signals = {"text": {"a": 1.0, "b": 0.5}, "behaviour": {"b": 1.0, "c": 0.2}}
    assert weighted_sum(signals, {"text": 0.5, "behaviour": 1.0}) == {"a": 0.5, "b": 1.25, "c": 0.2}
    # ranks: text a=1 b=2; behaviour b=1 c=2; k0 = 1
    rrf = reciprocal_rank_fusion(signals, {"text": 1.0, "behaviour": 2.0}, k0=1)
    assert rrf["a"] == pytest.approx(1 / 2)
    assert rrf["b"] == pytest.approx(1 / 3 + 2 / 2)
    assert rrf["c"] == pytest.approx(2 / 3)
    with pytest.raises(InvalidInput):
        weighted_sum(signals, {"text": -1.0})


def test_evidence_shrinkage_and_popularity():
    assert evidence_confidence(0, 20) == 0.0
    assert evidence_confidence(20, 20) == 0.5
    assert evidence_confidence(60, 20) == 0.75
    # the lift association: log-lift shrunk by the pair count, log(lift) * pair / (pair + shrink)
    lift = association_scores("lift", np.array([10, 1]), 10, np.array([25, 50]), 100, 10.0)  # lifts 4 and 0.2
    assert lift[0] == pytest.approx(math.log(4) / 2) and lift[1] == 0.0  # below chance: no association
    lucky = association_scores("lift", np.array([2]), 2, np.array([2]), 100, 10.0)[0]  # lift 50 from 2 baskets
    steady = association_scores("lift", np.array([50]), 100, np.array([100]), 1000, 10.0)[0]  # lift 5 from 50
    assert lucky < steady  # evidence beats a lucky rare pair
    assert popularity_prior(0, 100) == 0.0 and popularity_prior(100, 100) == 1.0


def test_weights_shift_from_text_to_behaviour_with_evidence():
    w = FusionWeights(text=1.0, text_warm=0.2, behaviour=1.0, transfer=0.5, popularity=0.1)
    cold, warm = w.signal_weights(0.0), w.signal_weights(1.0)
    assert cold == {"text": 1.0, "behaviour": 0.0, "transfer": 0.5, "popularity": 0.1}
    assert warm == {"text": 0.2, "behaviour": 1.0, "transfer": 0.0, "popularity": 0.1}
    signals = {"text": {"a": 0.9}, "behaviour": {"b": 1.0}, "transfer": {}, "popularity": {}}
    assert max(fuse(signals, w, 0.0).items(), key=lambda kv: kv[1])[0] == "a"  # a new product trusts text
    assert max(fuse(signals, w, 1.0).items(), key=lambda kv: kv[1])[0] == "b"  # a bestseller its behaviour
    with pytest.raises(InvalidInput, match="fusion weight text"):
        FusionWeights(text=float("nan"))
    with pytest.raises(InvalidInput, match="method"):
        FusionWeights(method="max")
