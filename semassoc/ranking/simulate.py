"""Self-simulation: replay the workspace's basket log at cuts inside it, to learn how to rank from its own history.

At each cut T: the feature window is the baskets before T (what the ranker would have known then), the label window
the baskets in ``[T, T + span)``. The simulated catalog is the catalog as of the end of the label window: products
first bought later (or never) are not candidates, because they could never be labelled relevant and would teach the
model that "new" means "never bought". Queries are established products (at least ``established_min`` baskets before
T), young ones (fewer, at least one) and new ones (none before T: first bought inside the label window), up to
``max_queries`` of each. Labels are the association
truth of ``semassoc evaluate`` (:func:`semassoc.evaluation.harness.build_truth`) on the label window's baskets.

Nothing here reads the events files: only the log, the stored vectors and the catalog payloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from semassoc.behaviour.baskets import MISSING, BasketLog
from semassoc.ranking import features as F
from semassoc.ranking.features import DATE_COLUMNS, parse_date
from semassoc.results import public_attributes


@dataclass
class Catalog:
    """Every product known to the store or the log, over one sorted code space."""

    ids: np.ndarray  # sorted unicode ids
    vectors: np.ndarray  # unit vectors (zeros where not in the store)
    in_store: np.ndarray
    price: np.ndarray
    category: np.ndarray
    brand: np.ndarray
    date: np.ndarray


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return out if np.isfinite(out) and out > 0 else float("nan")


def payload_attributes(payloads: list[dict[str, Any]]) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    """(price, category, brand, date) of payloads; category and brand as strings ('' when absent)."""
    price = np.array([_number(p.get("price")) for p in payloads], dtype=np.float64)
    category = [str(p.get("category") or "") for p in payloads]
    brand = [str(p.get("brand") or "") for p in payloads]
    date = np.full(len(payloads), MISSING, dtype=np.int64)
    for i, p in enumerate(payloads):
        flat = public_attributes(p)
        for name in DATE_COLUMNS:
            if flat.get(name) not in (None, ""):
                date[i] = parse_date(flat[name])
                break
    return price, category, brand, date


def label_codes(values: list[str]) -> np.ndarray:
    """Strings as codes of their sorted vocabulary ('' -> -1): equal values, equal codes, whatever the row order."""
    vocab = sorted({v for v in values if v})
    index = {v: i for i, v in enumerate(vocab)}
    return np.array([index.get(v, -1) for v in values], dtype=np.int64)


def load_catalog(store: Any, behaviour_ids: np.ndarray) -> Catalog:
    """Every stored product with its vector and attributes, plus the products only the log knows, sorted by id."""
    payloads = {str(p["product_id"]): p for p in store.iter_payloads()}
    stored_ids = sorted(payloads)
    ids = np.union1d(np.asarray(stored_ids, dtype=str), np.asarray(behaviour_ids, dtype=str))
    dim = store.dim() or 1
    vectors = np.zeros((ids.shape[0], dim), dtype=np.float32)
    in_store = np.isin(ids, np.asarray(stored_ids, dtype=str))
    for start in range(0, len(stored_ids), 2048):
        chunk = stored_ids[start : start + 2048]
        got = store.retrieve(chunk, with_vectors=True)
        rows = np.searchsorted(ids, np.asarray(chunk, dtype=str))
        for row, pid in zip(rows.tolist(), chunk, strict=True):
            vector = got[pid].vector if pid in got else None
            if vector is not None:
                vectors[row] = vector
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    ordered = [payloads.get(str(i), {}) for i in ids.tolist()]
    price, category, brand, date = payload_attributes(ordered)
    return Catalog(ids, vectors, in_store, price, label_codes(category), label_codes(brand), date)


@dataclass(frozen=True)
class Cut:
    """One simulated moment: features from baskets before ``at``, labels from ``[at, end)``."""

    at: int
    end: int

    def to_dict(self) -> dict[str, str]:
        return {"cut": _iso(self.at), "label_end": _iso(self.end)}


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).replace(microsecond=0).isoformat()


def choose_cuts(times: np.ndarray, n_cuts: int, label_fraction: float, step_fraction: float) -> list[Cut]:
    """``n_cuts`` cuts in the last part of the log's time range, latest first: the label window is
    ``label_fraction`` of the range, each earlier cut ``step_fraction`` of the range before the next."""
    timed = times[times != MISSING]
    lo, hi = int(timed.min()), int(timed.max()) + 1
    span = int((hi - lo) * label_fraction)
    step = int((hi - lo) * step_fraction)
    return [Cut(hi - span - i * step, hi - i * step) for i in range(n_cuts)]


@dataclass
class Simulated:
    """The training rows of one cut."""

    cut: Cut
    table: F.Table
    queries: np.ndarray
    established: np.ndarray  # per query
    baskets: np.ndarray  # per query: its baskets before the cut (0: truly new)
    labels: np.ndarray  # per row
    truth: list[dict[int, float]]  # per query: relevant code -> grade
    text_lists: list[tuple[np.ndarray, np.ndarray]]


def text_neighbours(
    vectors: np.ndarray, queries: np.ndarray, allowed: np.ndarray, limit: int, block: int = 512
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact nearest products by cosine among ``allowed`` codes (query itself left out), best first, ties by code."""
    allowed_codes = np.flatnonzero(allowed)
    matrix = vectors[allowed_codes]
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, queries.shape[0], block):
        chunk = queries[start : start + block]
        sims = vectors[chunk] @ matrix.T
        sims[allowed_codes[None, :] == chunk[:, None]] = -np.inf
        take = min(limit, allowed_codes.shape[0])
        top = np.argpartition(-sims, take - 1, axis=1)[:, :take] if take else np.zeros((len(chunk), 0), int)
        for row in range(chunk.shape[0]):
            cols = top[row]
            s = sims[row, cols]
            keep = np.isfinite(s)
            cols, s = cols[keep], s[keep]
            order = np.lexsort((allowed_codes[cols], -s))
            cols, s = cols[order], s[order]
            if cols.shape[0] == limit:  # as serving does (serve.cut_ties): no ties with the last of a full list
                keep = s != s[-1]
                cols, s = cols[keep], s[keep]
            out.append((allowed_codes[cols], s.astype(np.float64)))
    return out


def simulate(
    log: BasketLog,
    log_to_code: np.ndarray,
    catalog: Catalog,
    cut: Cut,
    *,
    min_count: int,
    established_min: int,
    max_queries: int,
    seed: int,
    k: int,
    text_limit: int,
    truth_config: Any = None,
) -> Simulated:
    """The candidates, features and labels of one cut (see the module docstring)."""
    import scipy.sparse as sp

    from semassoc.behaviour.cooccurrence import pair_counts
    from semassoc.behaviour.events import Events
    from semassoc.evaluation.truth import TruthConfig, build_truth

    n = catalog.ids.shape[0]
    items = log_to_code[log.items]
    full = sp.csr_matrix((np.ones(items.shape[0], np.int32), items, log.indptr), shape=(len(log), n))
    before = np.flatnonzero(log.time < cut.at)
    during = np.flatnonzero((log.time >= cut.at) & (log.time < cut.end))
    feature_matrix = full[before]
    pairs, counts = pair_counts(feature_matrix, workers=2)
    counts = np.asarray(counts, dtype=np.int64)
    first_all = BasketLog(log.indptr, items, log.time, n).first_seen()
    first = np.where((first_all != MISSING) & (first_all < cut.at), first_all, MISSING)
    universe = catalog.in_store & (first_all != MISSING) & (first_all < cut.end)

    def row(code: int) -> F.Row:
        start, stop = pairs.indptr[code], pairs.indptr[code + 1]
        codes = pairs.indices[start:stop].astype(np.int64)
        pair = pairs.data[start:stop].astype(np.int64)
        keep = pair >= min_count
        return codes[keep], pair[keep]

    view = F.View(
        ids=catalog.ids,
        counts=counts,
        first_seen=first,
        now=cut.at,
        baskets=int(before.shape[0]),
        row=row,
        recent_span=cut.end - cut.at,
        candidate_ok=universe,
        price=catalog.price,
        category=catalog.category,
        brand=catalog.brand,
        date=catalog.date,
    )
    label_matrix = full[during].tocsr()
    label_matrix.sort_indices()
    sizes = np.diff(label_matrix.indptr)
    judged = Events(
        item_ids=catalog.ids.astype(object),
        item=label_matrix.indices.astype(np.int32),
        basket_ids=np.array([str(i) for i in range(sizes.shape[0])], dtype=object),
        basket=np.repeat(np.arange(sizes.shape[0], dtype=np.int64), sizes),
        weight=np.ones(label_matrix.indices.shape[0]),
        event_types=np.array(["purchase"], dtype=object),
        event_type=np.zeros(label_matrix.indices.shape[0], np.int16),
    )
    truth = build_truth(judged, truth_config or TruthConfig(), catalog=set(catalog.ids[universe].tolist()))
    grades = truth.grades.tocsr()
    has_truth = np.diff(grades.indptr) > 0
    eligible = universe & has_truth
    established = eligible & (counts >= established_min)
    young = eligible & (counts > 0) & (counts < established_min)
    unseen = eligible & (counts == 0)
    rng = np.random.default_rng(seed)
    picked = []
    for mask in (established, young, unseen):  # up to max_queries of each (one model per kind: see ranker.GROUPS)
        codes = np.flatnonzero(mask)
        if codes.shape[0] > max_queries:
            codes = np.sort(rng.choice(codes, size=max_queries, replace=False))
        picked.append(codes)
    queries = np.concatenate(picked)
    is_established = np.r_[np.ones(picked[0].shape[0], bool), np.zeros(picked[1].shape[0] + picked[2].shape[0], bool)]
    text = text_neighbours(catalog.vectors, queries, universe, text_limit)
    table = F.build(view, queries, text, k=k)
    labels = np.zeros(table.candidates.shape[0])
    truths = []
    for i, q in enumerate(queries.tolist()):
        start, stop = grades.indptr[q], grades.indptr[q + 1]
        relevant = dict(zip(grades.indices[start:stop].tolist(), grades.data[start:stop].tolist(), strict=True))
        truths.append(relevant)
        lo, hi = table.offsets[i], table.offsets[i + 1]
        labels[lo:hi] = [relevant.get(c, 0.0) for c in table.candidates[lo:hi].tolist()]
    return Simulated(cut, table, queries, is_established, counts[queries], labels, truths, text)
