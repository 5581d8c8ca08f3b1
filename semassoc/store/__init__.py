"""Product vectors in Qdrant: one protocol (:mod:`.base`), two backends: :mod:`.embedded` (qdrant-edge,
in-process, the default) and :mod:`.remote` (qdrant-client: a server, a cluster, or ``:memory:``)."""
