"""A tuned model's history (``lineage.json``): the data fingerprint, versions, device, and the atomic save of the
model directory with it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semassoc.errors import StoreUnavailable
from semassoc.io import replace_directory

if TYPE_CHECKING:
    from semassoc.training.pairs import PairSet

#: Where a tuned model's history is written, inside its directory.
LINEAGE_FILE = "lineage.json"
LINEAGE_SCHEMA = 1


def data_fingerprint(
    sources: Mapping[str, Any], pair_options: Mapping[str, Any], pairs: PairSet, texts: Mapping[str, str]
) -> str:
    """sha256 of what the model learnt from: the behaviour sources, the pair options and the pairs with their texts."""
    digest = hashlib.sha256()
    digest.update(json.dumps(sources, sort_keys=True, default=str).encode("utf-8"))
    digest.update(json.dumps(pair_options, sort_keys=True).encode("utf-8"))
    for pair in (*pairs.train, *pairs.validation):
        digest.update(f"{pair.left}\0{pair.right}\0{texts[pair.left]}\0{texts[pair.right]}\n".encode())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("semassoc", "sentence-transformers", "torch", "transformers"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return out


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    if device == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device


def save_model(model: Any, destination: Path, lineage: dict[str, Any]) -> None:
    """Write the model and its lineage into place atomically (never half a model)."""

    def write(tmp: Path) -> None:
        model.save(str(tmp))
        (tmp / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2, default=str) + "\n", encoding="utf-8")

    try:
        replace_directory(destination, write)
    except OSError as exc:
        raise StoreUnavailable(f"{destination}: cannot write the tuned model: {exc}") from None
