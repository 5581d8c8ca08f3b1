"""Encode throughput on a GPU (or any device): bare `SentenceTransformer.encode` vs `semassoc index`, side by side.

    python benchmarks/bench_gpu_encode.py [--model DIR] [--products 30000] [--batch-sizes 64,256] [--device cuda]

Products: the example catalog's 3,000 titles, each repeated with a numbered pack size ("..., pack of 7") until
--products distinct titles; rendered with the bundled document template. Each batch size runs bare encode and a full
`api.index_catalog` into a fresh workspace (embedded Qdrant, nothing cached), alternating, after a warm-up.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model directory [default: the bundled all-MiniLM-L6-v2]")
    parser.add_argument("--products", type=int, default=30_000)
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    import torch

    from semassoc import api
    from semassoc.catalog import read_catalog
    from semassoc.text.encoder import SentenceTransformerEncoder
    from semassoc.text.prompts import PromptSet

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = SentenceTransformerEncoder(args.model, device=device)
    work = Path(tempfile.mkdtemp(prefix="gpu-encode-"))
    titles = [p.title for p in read_catalog(REPO / "examples" / "online_retail" / "catalog.csv").products]
    catalog = work / "catalog.csv"
    with catalog.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["product_id", "title"])
        for i in range(args.products):
            suffix = f", pack of {i // len(titles) + 1}" if i >= len(titles) else ""
            writer.writerow([f"p{i}", titles[i % len(titles)] + suffix])
    prompts = PromptSet.load()
    texts = [
        prompts.render_document(p.fields_for_prompt(), encoder.max_seq_length) for p in read_catalog(catalog).products
    ]
    texts = list(dict.fromkeys(texts))  # the index encodes each distinct text once; so does the bare side
    encoder.encode(texts[:2048], batch_size=64)  # warm-up: kernels, allocator
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    results: dict[str, object] = {"device": gpu, "products": len(texts), "torch": torch.__version__}
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        bare, index = [], []
        for repeat in range(2):
            start = time.perf_counter()
            encoder.model.encode(
                texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
            bare.append(time.perf_counter() - start)
            report = api.index_catalog(
                catalog, workspace=work / f"ws-{batch_size}-{repeat}", encoder=encoder, batch_size=batch_size
            )
            assert report.encoded == len(texts), report.encoded
            index.append(report.seconds)
        bare_s, index_s = min(bare), min(index)
        results[f"batch_{batch_size}"] = {
            "bare_texts_per_s": len(texts) / bare_s,
            "index_products_per_s": len(texts) / index_s,
            "index_vs_bare": bare_s / index_s,
            "bare_s": bare,
            "index_s": index,
        }
        print(
            f"{gpu} batch {batch_size}: bare {len(texts) / bare_s:,.0f} texts/s, index {len(texts) / index_s:,.0f} "
            f"products/s, ratio {bare_s / index_s:.2f}",
            flush=True,
        )
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
