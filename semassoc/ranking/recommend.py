"""Recommendations for a user: a profile from the user's history (stored or given), free-text interests, or
popularity, fused with the history's bought-together products (:meth:`RelatedEngine.recommend`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from semassoc.behaviour.stats import BehaviourStats
from semassoc.behaviour.users import HistoryItem
from semassoc.errors import InvalidInput, NotFound
from semassoc.ranking.fusion import (
    FusionWeights,
    clip_unit,
    evidence_confidence,
    fuse,
    max_normalise,
    popularity_prior,
)
from semassoc.results import DeferredItem, ScoredItem
from semassoc.store.base import ProductFilter
from semassoc.text.prompts import PromptSet

if TYPE_CHECKING:
    from semassoc.ranking.engine import RelatedEngine


@dataclass
class Recommendation:
    """Products for one user, and which path produced them.

    ``path`` is ``history`` (a profile from several products), ``cold-user`` (one or two products: semantic and
    popularity), ``interests`` (no history, free text), or ``popularity`` (nothing known about the user).
    """

    user_id: str | None
    path: str
    history_size: int
    items: list[ScoredItem]

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "path": self.path,
            "history_size": self.history_size,
            "items": [i.to_dict() for i in self.items],
        }


PROFILES = ("vectors", "text", "mix")
#: Half-life, in days, of a history product's weight in a user profile (recent purchases say more).
RECENCY_HALF_LIFE_DAYS = 90.0
#: Most recent history products used for a profile.
MAX_HISTORY = 100
#: With a fitted ranker, ``recommend`` aggregates the ranked related lists of the user's RANKED_SEEDS heaviest
#: history products (recency x count weights); each row adds weight / (RANKED_RANK_OFFSET + rank) to a candidate.
RANKED_SEEDS = 20
RANKED_RANK_OFFSET = 1


def recommend(
    engine: RelatedEngine,
    user_id: str | None = None,
    *,
    history: Sequence[str | HistoryItem] | None = None,
    interests: str | None = None,
    k: int = 10,
    allow_repeat: bool = False,
    negatives: Sequence[str] = (),
    filter: ProductFilter | None = None,
    profile: str = "vectors",
    weights: FusionWeights | None = None,
    ranker: bool = True,
) -> Recommendation:
    """Products for a user, from the user's history (stored, or given), free-text interests, or popularity.

    Candidates come from the store (a profile vector: recency-weighted mean of the history's vectors, pushed
    away from ``negatives`` like Qdrant's average-vector recommend strategy, and/or the history rendered
    through ``prompts/history.txt`` and encoded), from behaviour (the history's bought-together products) and
    from popularity. Already-bought products are left out unless ``allow_repeat``.

    Args:
        user_id: a user in the stored histories (unknown users get the cold paths).
        history: the user's products, most recent first (instead of, or added to, the stored history).
        interests: free text for a user without history (encoded with the query template).
        k: how many.
        allow_repeat: keep products the user already has (groceries).
        negatives: products to steer away from (returned, disliked).
        filter: as in ``similar``.
        profile: ``vectors`` (no model load), ``text`` (the history through the template and the encoder),
            or ``mix`` (both, averaged).
        weights: fusion weights (the product defaults; the user's evidence is the number of products).
        ranker: for a user with more than two known products, when the workspace has a ranker fitted by
            ``semassoc fit`` (and no ``interests``, ``weights`` or non-default ``profile`` are given), rank from
            the ranked ``related`` lists of the user's heaviest history products, summed with their recency
            weights; each row names the history product behind it. False (or no ranker, one or two products,
            none of them known): the profile fusion above.
    """
    from semassoc.ranking.engine import check_k  # (engine.py imports this module)
    from semassoc.ranking.fusion import Candidates

    check_k(k)
    if profile not in PROFILES:
        raise InvalidInput(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    use_ranker = ranker and weights is None and interests is None and profile == "vectors"
    weights = weights or FusionWeights()
    items = list(engine.histories.history(user_id)) if user_id and engine.histories is not None else []
    for entry in history or []:
        items.insert(0, entry if isinstance(entry, HistoryItem) else HistoryItem(str(entry)))
    seen: dict[str, HistoryItem] = {}
    for entry in items:
        seen.setdefault(entry.product_id, entry)
    items = list(seen.values())
    flt = (filter or ProductFilter()).with_excluded([] if allow_repeat else [h.product_id for h in items])
    flt = flt.with_excluded(list(negatives))
    stats = engine.behaviour
    pool = max(50, 5 * k)
    if not items and not interests:
        if stats is None:
            raise NotFound("no history, no --interests and no behaviour statistics: nothing to recommend from")
        return Recommendation(user_id, "popularity", 0, engine.popular(k=k, filter=flt))
    path = "history" if len(items) > 2 else ("cold-user" if items else "interests")
    history_size = len(items)
    items = items[:MAX_HISTORY]  # most recent first; older products weigh little after recency decay
    weight_of = _recency_weights(items)
    if use_ranker and path == "history" and engine.ranker is not None:  # 1-2 products: measured no better (fusion)
        ranked_items = _recommend_ranked(engine, items, weight_of, flt, k)
        if ranked_items is not None:
            return Recommendation(user_id, path, history_size, ranked_items)
    vector = _profile(engine, items, weight_of, interests, profile, negatives)
    hits = engine.search_vector(vector, k=pool, filter=flt) if vector is not None else []
    text = {h.product_id: h.score for h in hits}
    behaviour: dict[str, float] = {}
    counts: dict[str, tuple[int, float]] = {}
    if stats is not None and items:
        behaviour, counts = _history_signal(engine, stats, items[:MAX_HISTORY], weight_of, weights, pool)
    payloads = {h.product_id: h.payload for h in hits}
    payloads.update(engine.payloads([c for c in behaviour if c not in text]))
    needs_attributes = flt != ProductFilter(exclude=flt.exclude)
    behaviour = {
        c: v
        for c, v in behaviour.items()
        if c not in flt.exclude
        and (c in text or c in payloads or not engine.has_catalog)
        and (not needs_attributes or c in text or flt.matches(payloads.get(c, {"product_id": c})))
    }
    most = engine._most_baskets(stats)
    candidates = {*text, *behaviour}
    signals = {
        "text": clip_unit(text),
        "behaviour": max_normalise(behaviour),
        "transfer": {},
        "popularity": {c: popularity_prior(engine.basket_count(c), most) for c in candidates} if most else {},
    }
    # A user's evidence is the number of products known: one or two lean on text, many on behaviour.
    confidence = evidence_confidence(len(items), 5.0) if items else 0.0
    scores = fuse(signals, weights, confidence)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    if len(ranked) < k and stats is not None:  # top up from popularity (cold users with sparse signals)
        taken = flt.with_excluded([item for item, _ in ranked])
        ranked += [(p.product_id, 0.0) for p in engine.popular(k=k - len(ranked), filter=taken)]
    per_signal = weights.signal_weights(confidence)
    cand = Candidates(text=text, behaviour=behaviour, counts=counts)
    payloads.update(engine.payloads([item for item, _ in ranked if item not in payloads]))
    results = [
        engine._fused_item(item, score, signals, per_signal, cand, payloads.get(item), confidence)
        for item, score in ranked
    ]
    return Recommendation(user_id, path, history_size, results)


def _recommend_ranked(
    engine: RelatedEngine, items: list[HistoryItem], weight_of: dict[str, float], flt: ProductFilter, k: int
) -> list[ScoredItem] | None:
    """Recommendations from the fitted ranker's related lists of the heaviest history products (None when no
    history product is known to the catalog or the behaviour statistics)."""
    stats = engine.behaviour
    seeds = sorted((h.product_id for h in items), key=lambda p: -weight_of[p])[:RANKED_SEEDS]
    vectors = engine.vectors(seeds) if engine.has_catalog else {}
    seeds = [p for p in seeds if p in vectors or (stats is not None and p in stats)]
    if not seeds:
        return None
    lists = engine.related_rows(seeds, k=max(50, 5 * k), filter=flt, ranker=True)  # items built for the k shown
    total = sum(weight_of[p] for p in seeds) or 1.0
    scores: dict[str, float] = {}
    best: dict[str, tuple[float, str, DeferredItem]] = {}  # candidate -> its strongest contribution
    for seed, rows in zip(seeds, lists, strict=True):
        for rank, row in enumerate(rows):
            part = weight_of[seed] / total / (RANKED_RANK_OFFSET + rank)
            scores[row.product_id] = scores.get(row.product_id, 0.0) + part
            if part > best.get(row.product_id, (0.0, "", row))[0]:
                best[row.product_id] = (part, seed, row)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    titles = {p: str(payload.get("title") or p) for p, payload in engine.payloads(seeds).items()}
    results = []
    for item, score in ranked:
        _, seed, deferred = best[item]
        shown = deferred.item()
        results.append(
            ScoredItem(
                product_id=item,
                title=shown.title,
                score=score,
                signals={**shown.signals, "history_weight": weight_of[seed] / total},
                explanation=f"related to {titles.get(seed, seed)} you bought: {shown.explanation}",
                attributes=shown.attributes,
            )
        )
    if len(results) < k and stats is not None:  # top up from popularity
        results += engine.popular(k=k - len(results), filter=flt.with_excluded([r.product_id for r in results]))
    return results


def _history_signal(
    engine: RelatedEngine,
    stats: BehaviourStats,
    items: list[HistoryItem],
    weight_of: dict[str, float],
    weights: FusionWeights,
    pool: int,
) -> tuple[dict[str, float], dict[str, tuple[int, float]]]:
    """Bought-together products of a history: shrunk lift summed over history products, recency-weighted."""
    size = stats.info().items
    summed = np.zeros(size)
    best_pair = np.zeros(size, dtype=np.int64)
    best_lift = np.zeros(size)
    total = sum(weight_of.values()) or 1.0
    for entry in items:
        codes, score, pair, lift = engine._behaviour_scores(stats, entry.product_id, weights)
        if score.size == 0:
            continue
        summed[codes] += weight_of[entry.product_id] / total * score / score.max()
        better = pair > best_pair[codes]
        best_pair[codes[better]] = pair[better]
        best_lift[codes[better]] = lift[better]
    top = np.flatnonzero(summed)
    if top.size > pool:
        top = top[np.argpartition(-summed[top], pool - 1)[:pool]]
    names = stats.names_of(top)
    return (
        dict(zip(names, summed[top].tolist(), strict=True)),
        {n: (int(best_pair[c]), float(best_lift[c])) for n, c in zip(names, top.tolist(), strict=True)},
    )


def _profile(
    engine: RelatedEngine,
    items: list[HistoryItem],
    weight_of: dict[str, float],
    interests: str | None,
    profile: str,
    negatives: Sequence[str],
) -> np.ndarray | None:
    if not engine.has_catalog:
        return None
    parts: list[np.ndarray] = []
    if items and profile in ("vectors", "mix"):
        found = engine.vectors([h.product_id for h in items])
        if found:
            mean = sum(weight_of[p] * v for p, v in found.items()) / sum(weight_of[p] for p in found)
            bad = engine.vectors(list(negatives)) if negatives else {}
            if bad:  # Qdrant's average-vector recommend strategy: towards the positives, away from negatives
                mean = 2 * mean - np.mean(list(bad.values()), axis=0)
            parts.append(_unit(np.asarray(mean)))
    prompts = None
    if items and profile in ("text", "mix"):
        prompts = PromptSet.load(engine.ws.manifest.prompts_dir)
        titles = [str(p.get("title", "")) for p in engine.payloads([h.product_id for h in items]).values()]
        parts.append(_unit(engine.encode_text([prompts.render_history(titles, engine.ws.manifest.max_seq_length)])[0]))
    if interests:
        prompts = prompts or PromptSet.load(engine.ws.manifest.prompts_dir)
        parts.append(_unit(engine.encode_text([prompts.render_query(interests, engine.ws.manifest.max_seq_length)])[0]))
    return _unit(np.mean(parts, axis=0)) if parts else None


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _recency_weights(items: list[HistoryItem]) -> dict[str, float]:
    """Weight of each history product: its count, halved for every RECENCY_HALF_LIFE_DAYS before the latest one."""
    stamps = [h.last_seen for h in items if h.last_seen is not None]
    latest = max(stamps) if stamps else None
    weights = {}
    for h in items:
        decay = 1.0
        if latest is not None and h.last_seen is not None:
            decay = 0.5 ** ((latest - h.last_seen).total_seconds() / 86_400 / RECENCY_HALF_LIFE_DAYS)
        weights[h.product_id] = max(h.count, 1) * decay
    return weights
