"""``similar`` and ``search``: products by their text."""

from __future__ import annotations

from typing import Annotated

import typer

from semassoc import api
from semassoc.cli import output
from semassoc.cli.options import (
    ANY_PRODUCT,
    AsJson,
    Exact,
    Model,
    QdrantUrl,
    TopK,
    Workspace,
    filter_options,
)
from semassoc.store.base import ProductFilter


@filter_options
def similar(
    product_id: Annotated[str, typer.Argument(help="The product to find similar products for.")],
    workspace: Workspace = None,
    k: TopK = 10,
    filter: ProductFilter = ANY_PRODUCT,
    exact: Exact = False,
    qdrant_url: QdrantUrl = None,
    as_json: AsJson = False,
) -> None:
    """Products whose text is most similar to PRODUCT_ID's (substitutes).

    Example: semassoc similar 85123A -k 5
    """
    items = api.similar(
        product_id,
        workspace=workspace,
        k=k,
        filter=filter,
        exact=exact,
        qdrant_url=qdrant_url,
    )
    output.items(items, as_json, f"similar to {product_id}")


@filter_options
def search(
    text: Annotated[str, typer.Argument(help="What to look for, in words.")],
    workspace: Workspace = None,
    k: TopK = 10,
    model: Model = None,
    filter: ProductFilter = ANY_PRODUCT,
    exact: Exact = False,
    qdrant_url: QdrantUrl = None,
    as_json: AsJson = False,
) -> None:
    """Products matching free text (encodes the text with the workspace's encoder).

    Example: semassoc search "red enamel mug" -k 5
    """
    items = api.search(
        text,
        workspace=workspace,
        k=k,
        model=model,
        filter=filter,
        exact=exact,
        qdrant_url=qdrant_url,
    )
    output.items(items, as_json, f"search: {text}")
