"""Related-product queries over one open workspace: text neighbours (Qdrant), behavioural neighbours (pair
statistics), popularity, and their fusion (see :mod:`semassoc.ranking.fusion`).

:class:`RelatedEngine` keeps the store and the behaviour statistics open, so batch jobs and the evaluation harness
run many queries without reopening anything; :mod:`semassoc.api` opens a workspace per call and delegates here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from semassoc.behaviour import weightings
from semassoc.behaviour.stats import BehaviourStats, Neighbour
from semassoc.behaviour.users import HistoryItem, UserHistories
from semassoc.behaviour.weightings import METRICS
from semassoc.errors import InvalidInput, NotFound
from semassoc.ranking.fusion import (
    FusionWeights,
    association_scores,
    clip_unit,
    evidence_confidence,
    fuse,
    max_normalise,
    popularity_prior,
)
from semassoc.ranking.variants import variant_group
from semassoc.results import ScoredItem, public_attributes
from semassoc.store.base import Hit, ProductFilter
from semassoc.text.encoder import Encoder, LazyEncoder
from semassoc.text.prompts import PromptSet
from semassoc.workspace import Workspace

if TYPE_CHECKING:  # the ranker (and LightGBM) load only for a workspace with a fitted model
    from semassoc.ranking.ranker import Ranker
    from semassoc.ranking.serve import Server

#: Longest result list: beyond it a list is no longer a recommendation, and k must fit the store's and numpy's integers.
MAX_K = 100_000


def check_k(k: int) -> None:
    """Refuse a list length below 1 or above ``MAX_K``."""
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"--k must be between 1 and {MAX_K:,}, not {k}")


def text_item(hit: Hit, explanation: str | None = None) -> ScoredItem:
    """A text-similarity hit as a result."""
    return ScoredItem(
        product_id=hit.product_id,
        title=str(hit.payload.get("title", "")),
        score=hit.score,
        signals={"text": hit.score},
        explanation=explanation or f"text similarity {hit.score:.2f}",
        attributes=public_attributes(hit.payload),
    )


def behaviour_item(n: Neighbour, metric: str, payload: dict[str, Any] | None) -> ScoredItem:
    """A bought-together neighbour as a result."""
    return ScoredItem(
        product_id=n.item,
        title=str((payload or {}).get("title", "")),
        score=float(getattr(n, metric)),
        signals={"count": float(n.count), "confidence": n.confidence, "lift": n.lift, "npmi": n.npmi},
        explanation=f"bought together in {n.count} baskets (lift {n.lift:.1f}, confidence {n.confidence:.2f})",
        attributes=public_attributes(payload or {}),
    )


MODES = ("auto", "substitutes", "complements")
#: Products whose association arrays an engine keeps (a few MB on typical catalogs).
_SCORES_CACHE_SIZE = 4096
#: Text similarity at or above which a candidate counts as a near-duplicate of the query (not a complement).
NEAR_DUPLICATE = 0.9


@dataclass
class _Candidates:
    """Per-signal scores of one query's candidates, and what the explanations need."""

    text: dict[str, float] = field(default_factory=dict)
    behaviour: dict[str, float] = field(default_factory=dict)
    transfer: dict[str, float] = field(default_factory=dict)
    counts: dict[str, tuple[int, float]] = field(default_factory=dict)  # item -> (pair count, lift) with the query
    via: dict[str, tuple[str, float, int]] = field(default_factory=dict)  # item -> (text neighbour, its sim, count)


PROFILES = ("vectors", "text", "mix")
#: Half-life, in days, of a history product's weight in a user profile (recent purchases say more).
RECENCY_HALF_LIFE_DAYS = 90.0
#: Most recent history products used for a profile.
MAX_HISTORY = 100
#: With a fitted ranker, ``recommend`` aggregates the ranked related lists of the user's RANKED_SEEDS heaviest
#: history products (recency x count weights); each row adds weight / (RANKED_RANK_OFFSET + rank) to a candidate.
RANKED_SEEDS = 20
RANKED_RANK_OFFSET = 1


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


class RelatedEngine:
    """Queries on an open workspace.

    Example:
        >>> with Workspace.open(".semassoc") as ws:  # doctest: +SKIP
        ...     engine = RelatedEngine(ws)
        ...     engine.similar("85123A", k=5)
    """

    def __init__(self, ws: Workspace, encoder: Encoder | None = None) -> None:
        self.ws = ws
        self._stats: BehaviourStats | None = None
        self._stats_checked = False
        self._histories: UserHistories | None = None
        self._encoder = encoder
        self._scores_cache: dict[tuple[str, str, float], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._popularity: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._server: Server | None = None
        self._ranker_checked = False

    @property
    def histories(self) -> UserHistories | None:
        """User histories (None when the events had no user column or no behaviour was built)."""
        if self._histories is None and UserHistories.exists(self.ws.users_dir):
            self._histories = UserHistories(self.ws.users_dir)
        return self._histories

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Encode with the workspace's encoder (loaded on first use; refuses a mismatched one)."""
        encoder = self._encoder
        if encoder is None:
            encoder = self._encoder = LazyEncoder(self.ws.manifest.encoder_model)
        self.ws.check_encoder(encoder.id)
        return encoder.encode(texts)

    # -- parts ----------------------------------------------------------------------------------------------------
    @property
    def has_catalog(self) -> bool:
        """Whether a catalog was indexed (there are product vectors)."""
        return self.ws.manifest.encoder_id is not None

    @property
    def behaviour(self) -> BehaviourStats | None:
        """The behaviour statistics, or None when none were built."""
        if not self._stats_checked:
            self._stats_checked = True
            if (self.ws.behaviour_dir / "manifest.json").is_file():
                self._stats = BehaviourStats.open(self.ws.behaviour_dir)
        return self._stats

    def require_behaviour(self) -> BehaviourStats:
        stats = self.behaviour
        if stats is None:
            raise NotFound(f"no behaviour statistics in {self.ws.path} (run `semassoc behavior build EVENTS` first)")
        return stats

    def vectors(self, product_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of the products that are indexed."""
        stored = self.ws.store.retrieve(list(product_ids), with_vectors=True)
        return {pid: p.vector for pid, p in stored.items() if p.vector is not None}

    def payloads(self, product_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored payloads of the products that are indexed (empty without a catalog)."""
        if not self.has_catalog or not product_ids:
            return {}
        return {pid: p.payload for pid, p in self.ws.store.retrieve(list(product_ids)).items()}

    def basket_count(self, product_id: str) -> int:
        """Baskets holding the product in the behaviour statistics (0 when unknown or not built)."""
        stats = self.behaviour
        return stats.item_count(product_id) if stats is not None and product_id in stats else 0

    @property
    def ranker(self) -> Ranker | None:
        """The ranker fitted for this workspace (``semassoc fit``), or None: ``related`` then uses the hand-set
        fusion."""
        if not self._ranker_checked:
            self._ranker_checked = True
            from semassoc.ranking.ranker import Ranker

            ranker = Ranker.open(self.ws.path)
            stats = self.behaviour
            if ranker is not None and stats is not None:
                from semassoc.ranking.serve import Server

                self._server = Server(self, stats, ranker)
        return self._server.ranker if self._server is not None else None

    # -- text -----------------------------------------------------------------------------------------------------
    def similar(
        self, product_id: str, *, k: int = 10, filter: ProductFilter | None = None, exact: bool = False
    ) -> list[ScoredItem]:
        """Products whose text is closest to ``product_id``'s (itself excluded)."""
        return self.similar_batch([product_id], k=k, filter=filter, exact=exact)[0]

    def similar_batch(
        self, product_ids: Sequence[str], *, k: int = 10, filter: ProductFilter | None = None, exact: bool = False
    ) -> list[list[ScoredItem]]:
        """:meth:`similar` for many products in one batched store query (same results as a loop)."""
        check_k(k)
        found = self.vectors(product_ids)
        missing = [p for p in product_ids if p not in found]
        if missing:
            raise NotFound(f"product '{missing[0]}' is not in the workspace {self.ws.path}")
        base = filter or ProductFilter()
        hits = self.ws.store.search_batch(
            np.stack([found[p] for p in product_ids]),
            limit=k,
            filters=[base.with_excluded([p]) for p in product_ids],
            exact=exact,
        )
        return [[text_item(h) for h in row] for row in hits]

    def search_vector(
        self, vector: np.ndarray, *, k: int = 10, filter: ProductFilter | None = None, exact: bool = False
    ) -> list[Hit]:
        """Nearest products to any vector (a query, a user profile)."""
        return self.ws.store.search(vector, limit=k, filter=filter, exact=exact)

    # -- behaviour ------------------------------------------------------------------------------------------------
    def complements(
        self,
        product_id: str,
        *,
        k: int = 10,
        metric: str = "lift",
        min_count: int | None = None,
        filter: ProductFilter | None = None,
    ) -> list[ScoredItem]:
        """Products bought together with ``product_id``, best first by ``metric``.

        Filters on category, brand, price or stock use the indexed catalog: products without those attributes fail.
        """
        check_k(k)
        if metric not in METRICS:
            raise InvalidInput(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
        stats = self.require_behaviour()
        flt = (filter or ProductFilter()).with_excluded([product_id])
        needs_payload = flt != ProductFilter(exclude=flt.exclude)
        wanted = stats.info().items if needs_payload else k + len(flt.exclude)
        candidates = [
            n
            for n in stats.neighbours(product_id, k=wanted, metric=metric, min_count=min_count)
            if n.item not in flt.exclude
        ]
        payloads = self.payloads([n.item for n in (candidates if needs_payload else candidates[:k])])
        if needs_payload:
            candidates = [n for n in candidates if flt.matches(payloads.get(n.item, {"product_id": n.item}))]
        return [behaviour_item(n, metric, payloads.get(n.item)) for n in candidates[:k]]

    def _popularity_order(self, stats: BehaviourStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Product ids, basket counts and the order by popularity, computed once per engine (batch jobs ask often)."""
        if self._popularity is None:
            ids, counts = stats.item_ids_and_counts()
            self._popularity = (ids, counts, np.lexsort((ids, -counts)))
        return self._popularity

    def _most_baskets(self, stats: BehaviourStats | None) -> int:
        """Basket count of the most popular product (the popularity prior's scale); 0 without behaviour."""
        if stats is None:
            return 0
        _, counts, order = self._popularity_order(stats)
        return int(counts[order[0]]) if order.size else 0

    def popular(self, *, k: int = 10, filter: ProductFilter | None = None) -> list[ScoredItem]:
        """The products in most baskets (the popularity baseline and the cold-user fallback)."""
        check_k(k)
        stats = self.require_behaviour()
        ids, counts, order = self._popularity_order(stats)
        flt = filter or ProductFilter()
        needs_payload = flt != ProductFilter(exclude=flt.exclude)
        out: list[ScoredItem] = []
        chunk = max(4 * k, 64)
        for start in range(0, order.shape[0], chunk):
            block = [str(ids[i]) for i in order[start : start + chunk].tolist()]
            block = [p for p in block if p not in flt.exclude]
            payloads = self.payloads(block)
            for pid in block:
                payload = payloads.get(pid, {"product_id": pid})
                if needs_payload and not flt.matches(payload):
                    continue
                count = float(counts[int(np.searchsorted(ids, pid))])
                out.append(
                    ScoredItem(
                        pid,
                        str(payload.get("title", "")),
                        count,
                        {"popularity": count},
                        f"in {count:.0f} baskets",
                        public_attributes(payload),
                    )
                )
                if len(out) == k:
                    return out
        return out

    # -- fusion ---------------------------------------------------------------------------------------------------
    def related(
        self,
        product_id: str,
        *,
        mode: str = "auto",
        k: int = 10,
        filter: ProductFilter | None = None,
        collapse: str | None = None,
        weights: FusionWeights | None = None,
        ranker: bool = True,
    ) -> list[ScoredItem]:
        """Related products for any product, bestseller or brand new, each with per-signal scores and a reason.

        Args:
            product_id: the query product (in the catalog, in the behaviour statistics, or both).
            mode: ``substitutes`` (what a shopper would buy instead: text similarity), ``complements`` (what goes
                with it: own and borrowed behaviour, near-duplicates and variants of the query left out), ``auto``
                (both, fused by the product's behavioural evidence).
            k: how many.
            filter: as in ``similar``.
            collapse: collapse product variants: ``base-code`` or the name of a catalog column holding a group.
            weights: fusion weights (default: the evaluated defaults of :class:`FusionWeights`).
            ranker: in mode ``auto``, use the ranker fitted by ``semassoc fit`` when the workspace has one (False:
                the hand-set fusion, for comparisons). Explicit ``weights`` also select the fusion.
        """
        return self.related_batch(
            [product_id], mode=mode, k=k, filter=filter, collapse=collapse, weights=weights, ranker=ranker
        )[0]

    def related_batch(
        self,
        product_ids: Sequence[str],
        *,
        mode: str = "auto",
        k: int = 10,
        filter: ProductFilter | None = None,
        collapse: str | None = None,
        weights: FusionWeights | None = None,
        ranker: bool = True,
    ) -> list[list[ScoredItem]]:
        """:meth:`related` for many products; text neighbours come from one batched store query."""
        check_k(k)
        if mode not in MODES:
            raise InvalidInput(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        fitted = self.ranker if ranker and mode == "auto" and weights is None else None
        weights = weights or FusionWeights()
        stats = self.behaviour
        pool = max(50, 5 * k)
        base = filter or ProductFilter()
        vectors = self.vectors(product_ids) if self.has_catalog else {}
        for pid in product_ids:
            if pid not in vectors and (stats is None or pid not in stats):
                raise NotFound(f"product '{pid}' is neither in the catalog nor in the behaviour statistics")
        with_vectors = [p for p in product_ids if p in vectors]
        ranked_ids: list[str] = []
        if fitted is not None and self._server is not None:
            ranked_ids = [p for p in dict.fromkeys(product_ids) if fitted.has(fitted.group_of(self.basket_count(p)))]
        text_rows: dict[str, list[Hit]] = {}
        limit = max(pool, fitted.text_limit) if ranked_ids and fitted is not None else pool
        # the ranked queries' hits carry only ids (their server looks up the payloads it needs, once per engine); the
        # others get whole payloads; the same limit for both keeps every list as one search would give it
        ranked_set = set(ranked_ids)
        for part, payloads in (
            ([p for p in with_vectors if p in ranked_set], False),
            ([p for p in with_vectors if p not in ranked_set], True),
        ):
            if part:
                rows = self.ws.store.search_batch(
                    np.stack([vectors[p] for p in part]),
                    limit=limit,
                    filters=[base.with_excluded([p]) for p in part],
                    payloads=payloads,
                )
                text_rows.update(zip(part, rows, strict=True))
        served: dict[str, list[ScoredItem]] = {}
        if ranked_ids and self._server is not None:
            rows_of = {p: text_rows.get(p, []) for p in ranked_ids}
            lists = self._server.ranked(ranked_ids, rows_of, k, base, collapse, limit)
            served = dict(zip(ranked_ids, lists, strict=True))
        most = self._most_baskets(stats)
        return [
            served[pid]
            if pid in served
            else self._related_one(
                pid, text_rows.get(pid, [])[:pool], mode, k, base, collapse, weights, stats, most, pool
            )
            for pid in product_ids
        ]

    def _behaviour_scores(
        self, stats: BehaviourStats, product_id: str, weights: FusionWeights
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(codes, association scores, pair counts, lifts) of a product's above-chance associations, as arrays.

        Cached per engine: in a batch the same products come back again and again as text neighbours (donors).
        """
        key = (product_id, weights.association, weights.shrink)
        cached = self._scores_cache.get(key)
        if cached is None:
            if len(self._scores_cache) >= _SCORES_CACHE_SIZE:
                self._scores_cache.pop(next(iter(self._scores_cache)))  # drop the oldest entry
            cached = self._scores_cache[key] = self._compute_scores(stats, product_id, weights)
        return cached

    def _compute_scores(
        self, stats: BehaviourStats, product_id: str, weights: FusionWeights
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        codes, pair, right = stats.neighbour_codes(product_id)
        if codes.size == 0:
            return codes, np.zeros(0), pair, np.zeros(0)
        left, baskets = stats.item_count(product_id), stats.info().baskets
        lift = weightings.lift(pair, left, right, baskets)
        score = association_scores(weights.association, pair, left, right, baskets, weights.shrink)
        keep = score > 0
        return codes[keep], score[keep], pair[keep], lift[keep]

    def _behaviour_signal(
        self, stats: BehaviourStats, product_id: str, weights: FusionWeights, pool: int = 10**9
    ) -> tuple[dict[str, float], dict[str, tuple[int, float]]]:
        """The ``pool`` strongest associations of a product, keyed by product id."""
        codes, score, pair, lift = self._behaviour_scores(stats, product_id, weights)
        if codes.size > pool:
            top = np.argpartition(-score, pool - 1)[:pool]
            codes, score, pair, lift = codes[top], score[top], pair[top], lift[top]
        names = stats.names_of(codes)
        signal = dict(zip(names, score.tolist(), strict=True))
        return signal, dict(zip(names, zip(pair.tolist(), lift.tolist(), strict=True), strict=True))

    def _related_one(
        self,
        product_id: str,
        text_hits: list[Hit],
        mode: str,
        k: int,
        base: ProductFilter,
        collapse: str | None,
        weights: FusionWeights,
        stats: BehaviourStats | None,
        most: int,
        pool: int,
    ) -> list[ScoredItem]:
        baskets = self.basket_count(product_id)
        confidence = evidence_confidence(baskets, weights.half_point)
        cand = _Candidates(text={h.product_id: h.score for h in text_hits})
        payloads = {h.product_id: h.payload for h in text_hits}
        if stats is not None and mode != "substitutes":
            cand.behaviour, cand.counts = self._behaviour_signal(stats, product_id, weights, pool)
            if weights.transfer * (1 - confidence) >= 0.01:
                self._transfer(stats, product_id, text_hits, weights, cand, pool)
        flt = base.with_excluded([product_id])
        if mode == "complements":
            near_duplicates = [c for c, v in cand.text.items() if v >= NEAR_DUPLICATE]
            flt = flt.with_excluded(near_duplicates)
        candidates = sorted({*cand.text, *cand.behaviour, *cand.transfer} - set(flt.exclude))
        counts = stats.counts_of(candidates) if stats is not None else np.zeros(len(candidates), np.int64)
        signals = {
            "text": clip_unit({c: v for c, v in cand.text.items() if c not in flt.exclude}),
            "behaviour": max_normalise({c: v for c, v in cand.behaviour.items() if c not in flt.exclude}),
            "transfer": max_normalise({c: v for c, v in cand.transfer.items() if c not in flt.exclude}),
            "popularity": {c: popularity_prior(int(n), most) for c, n in zip(candidates, counts.tolist(), strict=True)}
            if most
            else {},
        }
        if mode == "complements":  # what goes with it: text only speaks for products without behaviour
            weights = FusionWeights(**{**weights.__dict__, "text_warm": 0.0})
        elif mode == "substitutes":  # what to buy instead: text similarity, popularity breaks ties
            weights = FusionWeights(**{**weights.__dict__, "text_warm": weights.text})
        scores = fuse(signals, weights, confidence)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        ranked = self._admissible(ranked, payloads, flt, collapse, product_id, k)
        per_signal = weights.signal_weights(confidence)
        return [
            self._fused_item(item, score, signals, per_signal, cand, payloads.get(item), confidence)
            for item, score in ranked
        ]

    def _admissible(
        self,
        ranked: list[tuple[str, float]],
        payloads: dict[str, dict[str, Any]],
        flt: ProductFilter,
        collapse: str | None,
        product_id: str,
        k: int,
    ) -> list[tuple[str, float]]:
        """Walk down the fused ranking until ``k`` products are catalog products passing the filter (and, with
        ``collapse``, of distinct variant groups); payloads are fetched in blocks, only as far as needed."""
        needs_attributes = flt != ProductFilter(exclude=flt.exclude)
        groups = (
            {variant_group(product_id, self.payloads([product_id]).get(product_id), collapse)} if collapse else set()
        )
        excluded = set(flt.exclude)
        ranked = [(item, score) for item, score in ranked if item not in excluded]
        kept: list[tuple[str, float]] = []
        block = max(4 * k, 32)
        for start in range(0, len(ranked), block):
            chunk = ranked[start : start + block]
            payloads.update(self.payloads([c for c, _ in chunk if c not in payloads]))
            for item, score in chunk:
                payload = payloads.get(item)
                if payload is None and self.has_catalog:
                    continue  # not (or no longer) in the catalog
                if needs_attributes and not flt.matches(payload or {"product_id": item}):
                    continue
                if collapse:
                    group = variant_group(item, payload, collapse)
                    if group in groups:
                        continue
                    groups.add(group)
                kept.append((item, score))
                if len(kept) == k:
                    return kept
        return kept

    def _transfer(
        self,
        stats: BehaviourStats,
        product_id: str,
        text_hits: list[Hit],
        weights: FusionWeights,
        cand: _Candidates,
        pool: int,
        neighbours: int = 10,
    ) -> None:
        """Borrow the behavioural neighbours of the product's nearest warm text neighbours, weighted by similarity."""
        donors = [h for h in text_hits if h.score > 0 and h.product_id in stats][:neighbours]
        total = sum(h.score for h in donors)
        if total <= 0:
            return
        size = stats.info().items
        summed = np.zeros(size)
        strongest = np.zeros(size)
        via = np.full(size, -1, dtype=np.int64)  # donor position giving the strongest share
        via_count = np.zeros(size, dtype=np.int64)
        for position, donor in enumerate(donors):
            codes, score, pair, _ = self._behaviour_scores(stats, donor.product_id, weights)
            if score.size == 0:
                continue
            share = donor.score / total * score / score.max()  # each donor's associations on one scale
            summed[codes] += share
            better = share > strongest[codes]
            strongest[codes[better]] = share[better]
            via[codes[better]] = position
            via_count[codes[better]] = pair[better]
        if product_id in stats:
            summed[stats.codes_of([product_id])] = 0.0
        top = np.flatnonzero(summed)
        if top.size > pool:
            top = top[np.argpartition(-summed[top], pool - 1)[:pool]]
        names = stats.names_of(top)
        cand.transfer = dict(zip(names, summed[top].tolist(), strict=True))
        for name, code in zip(names, top.tolist(), strict=True):
            donor = donors[int(via[code])]
            cand.via[name] = (donor.product_id, donor.score, int(via_count[code]))

    def _fused_item(
        self,
        item: str,
        score: float,
        signals: dict[str, dict[str, float]],
        per_signal: dict[str, float],
        cand: _Candidates,
        payload: dict[str, Any] | None,
        confidence: float,
    ) -> ScoredItem:
        raw = {
            "text": cand.text.get(item, 0.0),
            "behaviour": cand.behaviour.get(item, 0.0),
            "transfer": cand.transfer.get(item, 0.0),
            "popularity": signals["popularity"].get(item, 0.0),
            "evidence": confidence,
        }
        contributions = {name: per_signal[name] * signals[name].get(item, 0.0) for name in per_signal}
        reasons = [name for name, value in sorted(contributions.items(), key=lambda kv: -kv[1]) if value > 0]
        parts: list[str] = []
        for name in reasons[:2]:
            if parts and contributions[name] < 0.3 * contributions[reasons[0]]:
                break
            parts.append(self._reason(name, item, raw, cand))
        return ScoredItem(
            product_id=item,
            title=str((payload or {}).get("title", "")),
            score=score,
            signals=raw,
            explanation="; ".join(parts) or "related",
            attributes=public_attributes(payload or {}),
        )

    def _reason(self, name: str, item: str, raw: dict[str, float], cand: _Candidates) -> str:
        if name == "behaviour":
            count, lift = cand.counts[item]
            return f"bought together in {count} baskets (lift {lift:.1f})"
        if name == "transfer":
            donor, similarity, count = cand.via[item]
            title = self.payloads([donor]).get(donor, {}).get("title", donor)
            return f"via {title} (text {similarity:.2f}), bought together {count} times"
        if name == "text":
            return f"text similarity {raw['text']:.2f}"
        return f"popular: in {self.basket_count(item)} baskets"

    # -- users ----------------------------------------------------------------------------------------------------
    def recommend(
        self,
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
        check_k(k)
        if profile not in PROFILES:
            raise InvalidInput(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
        use_ranker = ranker and weights is None and interests is None and profile == "vectors"
        weights = weights or FusionWeights()
        items = list(self.histories.history(user_id)) if user_id and self.histories is not None else []
        for entry in history or []:
            items.insert(0, entry if isinstance(entry, HistoryItem) else HistoryItem(str(entry)))
        seen: dict[str, HistoryItem] = {}
        for entry in items:
            seen.setdefault(entry.product_id, entry)
        items = list(seen.values())
        flt = (filter or ProductFilter()).with_excluded([] if allow_repeat else [h.product_id for h in items])
        flt = flt.with_excluded(list(negatives))
        stats = self.behaviour
        pool = max(50, 5 * k)
        if not items and not interests:
            if stats is None:
                raise NotFound("no history, no --interests and no behaviour statistics: nothing to recommend from")
            return Recommendation(user_id, "popularity", 0, self.popular(k=k, filter=flt))
        path = "history" if len(items) > 2 else ("cold-user" if items else "interests")
        history_size = len(items)
        items = items[:MAX_HISTORY]  # most recent first; older products weigh little after recency decay
        weight_of = _recency_weights(items)
        if use_ranker and path == "history" and self.ranker is not None:  # 1-2 products: measured no better (fusion)
            ranked_items = self._recommend_ranked(items, weight_of, flt, k)
            if ranked_items is not None:
                return Recommendation(user_id, path, history_size, ranked_items)
        vector = self._profile(items, weight_of, interests, profile, negatives)
        hits = self.search_vector(vector, k=pool, filter=flt) if vector is not None else []
        text = {h.product_id: h.score for h in hits}
        behaviour: dict[str, float] = {}
        counts: dict[str, tuple[int, float]] = {}
        if stats is not None and items:
            behaviour, counts = self._history_signal(stats, items[:MAX_HISTORY], weight_of, weights, pool)
        payloads = {h.product_id: h.payload for h in hits}
        payloads.update(self.payloads([c for c in behaviour if c not in text]))
        needs_attributes = flt != ProductFilter(exclude=flt.exclude)
        behaviour = {
            c: v
            for c, v in behaviour.items()
            if c not in flt.exclude
            and (c in text or c in payloads or not self.has_catalog)
            and (not needs_attributes or c in text or flt.matches(payloads.get(c, {"product_id": c})))
        }
        most = self._most_baskets(stats)
        candidates = {*text, *behaviour}
        signals = {
            "text": clip_unit(text),
            "behaviour": max_normalise(behaviour),
            "transfer": {},
            "popularity": {c: popularity_prior(self.basket_count(c), most) for c in candidates} if most else {},
        }
        # A user's evidence is the number of products known: one or two lean on text, many on behaviour.
        confidence = evidence_confidence(len(items), 5.0) if items else 0.0
        scores = fuse(signals, weights, confidence)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        if len(ranked) < k and stats is not None:  # top up from popularity (cold users with sparse signals)
            taken = flt.with_excluded([item for item, _ in ranked])
            ranked += [(p.product_id, 0.0) for p in self.popular(k=k - len(ranked), filter=taken)]
        per_signal = weights.signal_weights(confidence)
        cand = _Candidates(text=text, behaviour=behaviour, counts=counts)
        payloads.update(self.payloads([item for item, _ in ranked if item not in payloads]))
        results = [
            self._fused_item(item, score, signals, per_signal, cand, payloads.get(item), confidence)
            for item, score in ranked
        ]
        return Recommendation(user_id, path, history_size, results)

    def _recommend_ranked(
        self, items: list[HistoryItem], weight_of: dict[str, float], flt: ProductFilter, k: int
    ) -> list[ScoredItem] | None:
        """Recommendations from the fitted ranker's related lists of the heaviest history products (None when no
        history product is known to the catalog or the behaviour statistics)."""
        stats = self.behaviour
        seeds = sorted((h.product_id for h in items), key=lambda p: -weight_of[p])[:RANKED_SEEDS]
        vectors = self.vectors(seeds) if self.has_catalog else {}
        seeds = [p for p in seeds if p in vectors or (stats is not None and p in stats)]
        if not seeds:
            return None
        lists = self.related_batch(seeds, k=max(50, 5 * k), filter=flt, ranker=True)
        total = sum(weight_of[p] for p in seeds) or 1.0
        scores: dict[str, float] = {}
        best: dict[str, tuple[float, str, ScoredItem]] = {}  # candidate -> its strongest contribution
        for seed, rows in zip(seeds, lists, strict=True):
            for rank, row in enumerate(rows):
                part = weight_of[seed] / total / (RANKED_RANK_OFFSET + rank)
                scores[row.product_id] = scores.get(row.product_id, 0.0) + part
                if part > best.get(row.product_id, (0.0, "", row))[0]:
                    best[row.product_id] = (part, seed, row)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        titles = {p: str(payload.get("title") or p) for p, payload in self.payloads(seeds).items()}
        results = []
        for item, score in ranked:
            _, seed, row = best[item]
            results.append(
                ScoredItem(
                    product_id=item,
                    title=row.title,
                    score=score,
                    signals={**row.signals, "history_weight": weight_of[seed] / total},
                    explanation=f"related to {titles.get(seed, seed)} you bought: {row.explanation}",
                    attributes=row.attributes,
                )
            )
        if len(results) < k and stats is not None:  # top up from popularity
            results += self.popular(k=k - len(results), filter=flt.with_excluded([r.product_id for r in results]))
        return results

    def _history_signal(
        self,
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
            codes, score, pair, lift = self._behaviour_scores(stats, entry.product_id, weights)
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
        self,
        items: list[HistoryItem],
        weight_of: dict[str, float],
        interests: str | None,
        profile: str,
        negatives: Sequence[str],
    ) -> np.ndarray | None:
        if not self.has_catalog:
            return None
        parts: list[np.ndarray] = []
        if items and profile in ("vectors", "mix"):
            found = self.vectors([h.product_id for h in items])
            if found:
                mean = sum(weight_of[p] * v for p, v in found.items()) / sum(weight_of[p] for p in found)
                bad = self.vectors(list(negatives)) if negatives else {}
                if bad:  # Qdrant's average-vector recommend strategy: towards the positives, away from negatives
                    mean = 2 * mean - np.mean(list(bad.values()), axis=0)
                parts.append(_unit(np.asarray(mean)))
        prompts = None
        if items and profile in ("text", "mix"):
            prompts = PromptSet.load(self.ws.manifest.prompts_dir)
            titles = [str(p.get("title", "")) for p in self.payloads([h.product_id for h in items]).values()]
            parts.append(_unit(self.encode_text([prompts.render_history(titles, self.ws.manifest.max_seq_length)])[0]))
        if interests:
            prompts = prompts or PromptSet.load(self.ws.manifest.prompts_dir)
            parts.append(_unit(self.encode_text([prompts.render_query(interests, self.ws.manifest.max_seq_length)])[0]))
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
