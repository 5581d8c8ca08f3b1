"""Benchmark association rules on Groceries against mlxtend, and check that both give the same rules.

    python benchmarks/bench_rules.py [--support 0.001 --confidence 0.5]

mlxtend and pandas are measured only if installed (``pip install mlxtend pandas``); they are not dependencies.
Times are the median of ``--repeat`` runs. Data: ../shared/data/groceries (or $SEMASSOC_SHARED_DATA).
"""

from __future__ import annotations

import argparse
import csv

from bench_behaviour import shared_data, timed  # same folder: the scripts run as files

from semassoc.behaviour.rules import mine_rules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--support", type=float, default=0.001)
    parser.add_argument("--confidence", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    path = shared_data() / "groceries" / "groceries_basket.csv"
    if not path.is_file():
        print(f"skipped: {path} not found")
        return
    with path.open(encoding="utf-8", newline="") as fh:
        baskets = [row for row in csv.reader(fh)]
    print(f"Groceries: {len(baskets):,} baskets; support {args.support}, confidence {args.confidence}")

    ours_s, rules = timed(lambda: mine_rules(baskets, args.support, args.confidence), args.repeat)
    print(f"  ours (pyfim fpgrowth + exact counts)     {ours_s * 1e3:9.1f} ms  {len(rules):,} rules")

    try:
        import pandas as pd
        from mlxtend.frequent_patterns import association_rules, fpgrowth
        from mlxtend.preprocessing import TransactionEncoder
    except ImportError:
        print("  mlxtend: not installed")
        return

    def mlxtend_rules() -> object:
        encoder = TransactionEncoder()
        onehot = pd.DataFrame(encoder.fit(baskets).transform(baskets), columns=encoder.columns_)
        itemsets = fpgrowth(onehot, min_support=args.support, use_colnames=True, max_len=10)
        found = association_rules(itemsets, metric="confidence", min_threshold=args.confidence)
        # arules (and we) give one-item consequents; mlxtend also gives longer ones.
        return found[found["consequents"].apply(len) == 1]

    theirs_s, theirs = timed(mlxtend_rules, max(1, args.repeat // 2))
    print(f"  mlxtend fpgrowth + association_rules     {theirs_s * 1e3:9.1f} ms  {len(theirs):,} one-item-rhs rules")
    print(f"    ratio mlxtend / ours = {theirs_s / ours_s:.1f}x")

    ours_map = {(frozenset(r.lhs), r.rhs[0]): r for r in rules}
    theirs_map = {
        (frozenset(row.antecedents), next(iter(row.consequents))): row for row in theirs.itertuples(index=False)
    }
    same_keys = ours_map.keys() == theirs_map.keys()
    worst = 0.0
    if same_keys:
        for key, row in theirs_map.items():
            mine = ours_map[key]
            worst = max(
                worst,
                abs(mine.support - row.support),
                abs(mine.confidence - row.confidence),
                abs(mine.lift - row.lift),
            )
    print(f"  identical rule sets: {same_keys}; largest metric difference {worst:.2e}")
    if not same_keys or worst > 1e-9:
        raise SystemExit("rule sets differ")


if __name__ == "__main__":
    main()
