"""Related-product queries over one open workspace: text neighbours (Qdrant), behavioural neighbours (pair
statistics), popularity, and their fusion (see :mod:`semassoc.ranking.fusion`).

:class:`RelatedEngine` keeps the store and the behaviour statistics open, so batch jobs and the evaluation harness
run many queries without reopening anything; :mod:`semassoc.api` opens a workspace per call and delegates here.
Recommendations for users (``RelatedEngine.recommend``) are in :mod:`semassoc.ranking.recommend`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from semassoc.behaviour import weightings
from semassoc.behaviour.stats import BehaviourStats
from semassoc.behaviour.users import UserHistories
from semassoc.behaviour.weightings import METRICS
from semassoc.errors import InvalidInput, NotFound
from semassoc.ranking.fusion import (
    Candidates,
    FusionWeights,
    association_scores,
    clip_unit,
    evidence_confidence,
    fuse,
    max_normalise,
    popularity_prior,
)
from semassoc.ranking.nearest import nearest_ids
from semassoc.ranking.recommend import recommend as recommend_user
from semassoc.ranking.variants import variant_group
from semassoc.results import DeferredItem, ScoredItem, behaviour_item, public_attributes, text_item
from semassoc.store.base import Hit, ProductFilter
from semassoc.text.encoder import Encoder, LazyEncoder
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


MODES = ("auto", "substitutes", "complements")
#: Products whose association arrays an engine keeps (a few MB on typical catalogs).
_SCORES_CACHE_SIZE = 4096
#: Text similarity at or above which a candidate counts as a near-duplicate of the query (not a complement).
NEAR_DUPLICATE = 0.9


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
        lists = self.related_rows(
            product_ids, mode=mode, k=k, filter=filter, collapse=collapse, weights=weights, ranker=ranker
        )
        return [[row.item() for row in rows] for rows in lists]

    def related_rows(
        self,
        product_ids: Sequence[str],
        *,
        mode: str = "auto",
        k: int = 10,
        filter: ProductFilter | None = None,
        collapse: str | None = None,
        weights: FusionWeights | None = None,
        ranker: bool = True,
    ) -> list[list[DeferredItem]]:
        """:meth:`related_batch` with each row's result built only when asked for (``row.item()``)."""
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
        limit = max(pool, fitted.text_limit) if ranked_ids and fitted is not None else pool
        # the ranked queries' text neighbours are ids and cosines only (their server looks up the payloads it needs,
        # once per engine); the others get whole payloads; the same limit for both keeps every list as one search
        # would give it
        ranked_set = set(ranked_ids)
        text_rows: dict[str, list[Hit]] = {}
        part = [p for p in with_vectors if p not in ranked_set]
        if part:
            rows = self.ws.store.search_batch(
                np.stack([vectors[p] for p in part]), limit=limit, filters=[base.with_excluded([p]) for p in part]
            )
            text_rows.update(zip(part, rows, strict=True))
        served: dict[str, list[DeferredItem]] = {}
        if ranked_ids and self._server is not None:
            part = [p for p in ranked_ids if p in vectors]
            nearest = (
                dict(zip(part, nearest_ids(self.ws.store, part, vectors, base, limit), strict=True)) if part else {}
            )
            rows_of = {p: nearest.get(p, ([], [])) for p in ranked_ids}
            lists = self._server.ranked(ranked_ids, rows_of, k, base, collapse, limit)
            served = dict(zip(ranked_ids, lists, strict=True))
        most = self._most_baskets(stats)
        return [
            served[pid]
            if pid in served
            else [
                DeferredItem.of(item)
                for item in self._related_one(
                    pid, text_rows.get(pid, [])[:pool], mode, k, base, collapse, weights, stats, most, pool
                )
            ]
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
        cand = Candidates(text={h.product_id: h.score for h in text_hits})
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
        cand: Candidates,
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
        cand: Candidates,
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

    def _reason(self, name: str, item: str, raw: dict[str, float], cand: Candidates) -> str:
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
    #: Products for a user, from the user's history, free-text interests or popularity (see
    #: :func:`semassoc.ranking.recommend.recommend`).
    recommend = recommend_user
