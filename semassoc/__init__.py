"""semassoc: semantic product association for e-commerce.

Product text embedded by a Transformer and stored in Qdrant, fused with behavioural co-occurrence, gives related
products that work from a product's first day. Start with :mod:`semassoc.api`.
"""

__version__ = "0.1.0"
