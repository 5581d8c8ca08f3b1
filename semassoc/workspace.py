"""The workspace: one directory holding the manifest, the embedded Qdrant files, the vector cache and (later)
behaviour statistics and tuned models.

Opening a workspace is cheap: it reads ``manifest.json`` and opens the store; the encoder is loaded only by code
that needs to encode.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from semassoc.errors import EncoderMismatch, InvalidInput, NotFound, StoreBusy
from semassoc.io import atomic_write_json
from semassoc.store.base import VectorStore
from semassoc.store.embedded import EmbeddedStore
from semassoc.store.remote import RemoteStore

SCHEMA_VERSION = 1
DEFAULT_WORKSPACE = ".semassoc"
MANIFEST = "manifest.json"
ENV_WORKSPACE = "SEMASSOC_WORKSPACE"
ENV_QDRANT_URL = "SEMASSOC_QDRANT_URL"
ENV_QDRANT_API_KEY = "SEMASSOC_QDRANT_API_KEY"


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class StoreSettings:
    """Where the vectors live. ``url`` None means the embedded store inside the workspace."""

    url: str | None = None
    collection: str = "semassoc_products"
    shards: int | None = None
    replicas: int | None = None

    @property
    def kind(self) -> str:
        return "embedded" if self.url is None else "remote"


@dataclass
class Manifest:
    """Settings that live with the data (``manifest.json``)."""

    schema_version: int = SCHEMA_VERSION
    encoder_id: str | None = None
    encoder_model: str | None = None  # what --model said (name or directory)
    dim: int | None = None
    max_seq_length: int | None = None
    prompts_digest: str | None = None
    prompts_dir: str | None = None
    store: StoreSettings = field(default_factory=StoreSettings)
    products: int = 0
    created: str = field(default_factory=now_iso)
    updated: str | None = None
    last_index: dict[str, Any] = field(default_factory=dict)
    behaviour: dict[str, Any] = field(default_factory=dict)  # how events were read and counted (LoadOptions...)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{path}: unreadable workspace manifest: {exc}") from None
        if data.get("schema_version", 0) > SCHEMA_VERSION:
            raise InvalidInput(f"{path}: written by a newer semassoc (schema {data['schema_version']}); upgrade")
        store = StoreSettings(**data.pop("store", {}))
        known = set(cls.__dataclass_fields__)
        return cls(store=store, **{k: v for k, v in data.items() if k in known})

    def write(self, path: Path) -> None:
        atomic_write_json(path, asdict(self), sort_keys=True)  # a crash leaves the old manifest or the new one


def resolve_workspace_path(path: str | Path | None) -> Path:
    """``--workspace``, else ``$SEMASSOC_WORKSPACE``, else ``./.semassoc``."""
    return Path(path or os.environ.get(ENV_WORKSPACE) or DEFAULT_WORKSPACE)


class Workspace:
    """An open workspace. Use :meth:`open` (reading) or :meth:`create_or_open` (writing), as a context manager.

    Example:
        >>> with Workspace.open(".semassoc") as ws:  # doctest: +SKIP
        ...     print(ws.manifest.products)
    """

    def __init__(
        self, path: Path, manifest: Manifest, *, writer: bool, store_client: Any = None, api_key: str | None = None
    ) -> None:
        self.path = path
        self._api_key = api_key  # from the --qdrant-url of this run; never stored
        self.manifest = manifest
        self.writer = writer
        self._store: VectorStore | None = None
        self._store_client = store_client
        self._lock_handle: Any = None
        if writer:
            self._lock()

    # -- opening -------------------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | Path | None = None,
        *,
        qdrant_url: str | None = None,
        store_client: Any = None,
        writer: bool = False,
    ) -> Workspace:
        """Open an existing workspace; raise NotFound when there is none."""
        root = resolve_workspace_path(path)
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise NotFound(f"no semassoc workspace at {root} (run `semassoc index CATALOG` first, or pass --workspace)")
        manifest = Manifest.read(manifest_path)
        url, api_key = _public_url(qdrant_url or os.environ.get(ENV_QDRANT_URL))
        _check_store_location(manifest.store, url, root)
        return cls(root, manifest, writer=writer, store_client=store_client, api_key=api_key)

    @classmethod
    def create_or_open(
        cls,
        path: str | Path | None = None,
        *,
        qdrant_url: str | None = None,
        collection: str | None = None,
        shards: int | None = None,
        replicas: int | None = None,
        store_client: Any = None,
    ) -> Workspace:
        """Open a workspace for writing, creating it (with the given store settings) when it does not exist."""
        root = resolve_workspace_path(path)
        given = qdrant_url or os.environ.get(ENV_QDRANT_URL)
        url, api_key = _public_url(given)  # the manifest keeps the URL without credentials
        if (root / MANIFEST).is_file():
            ws = cls.open(root, qdrant_url=given, store_client=store_client, writer=True)
            if collection and collection != ws.manifest.store.collection:
                ws.close()
                raise InvalidInput(
                    f"{root} uses collection '{ws.manifest.store.collection}', not '{collection}'; "
                    "use another --workspace for another collection"
                )
            return ws
        if root.exists() and not root.is_dir():
            raise InvalidInput(f"{root} is a file, not a workspace directory; choose another --workspace")
        # A lock file alone is what a first run that failed before writing its manifest leaves behind.
        if root.exists() and any(entry.name != "lock" for entry in root.iterdir()):
            raise InvalidInput(f"{root} exists and is not a semassoc workspace; choose another --workspace")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInput(f"cannot create the workspace {root}: {exc.strerror or exc}") from None
        settings = StoreSettings(
            url=url, collection=collection or "semassoc_products", shards=shards, replicas=replicas
        )
        ws = cls(root, Manifest(store=settings), writer=True, store_client=store_client, api_key=api_key)
        return ws

    def _lock(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = (self.path / "lock").open("a")
        except OSError as exc:  # a read-only file system, no permission
            raise InvalidInput(f"cannot write to the workspace {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreBusy(
                f"workspace is in use: another semassoc process is writing to {self.path}; try again when it is done"
            ) from None
        self._lock_handle = handle

    # -- parts ---------------------------------------------------------------------------------------------------
    @property
    def store(self) -> VectorStore:
        """The vector store (opened on first use)."""
        if self._store is None:
            settings = self.manifest.store
            if settings.url is None:
                self._store = EmbeddedStore(self.path / "qdrant", dim=self.manifest.dim)
            else:
                self._store = RemoteStore(
                    settings.url,
                    collection=settings.collection,
                    api_key=self._api_key or os.environ.get(ENV_QDRANT_API_KEY),
                    shards=settings.shards,
                    replicas=settings.replicas,
                    client=self._store_client,
                )
        return self._store

    @property
    def behaviour_dir(self) -> Path:
        """Where the behaviour statistics live."""
        return self.path / "behaviour"

    @property
    def users_dir(self) -> Path:
        """Where the user histories live."""
        return self.path / "users"

    def check_encoder(self, encoder_id: str) -> None:
        """Refuse an encoder other than the one that built the workspace."""
        built = self.manifest.encoder_id
        if built is not None and built != encoder_id:
            raise EncoderMismatch(
                f"this workspace was built with encoder '{built}', not '{encoder_id}'; query it with "
                f"--model {self.manifest.encoder_model or built}, or re-index with `semassoc index --model ...`"
            )

    def save(self) -> None:
        """Write the manifest (writers only)."""
        if not self.writer:
            raise StoreBusy("internal: the workspace was opened read-only")
        self.manifest.updated = now_iso()
        self.manifest.write(self.path / MANIFEST)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _public_url(url: str | None) -> tuple[str | None, str | None]:
    """A ``--qdrant-url`` without its credentials (checked), and the API key it carried."""
    if url is None:
        return None, None
    from semassoc.store.location import split_qdrant_url

    return split_qdrant_url(url)


def _check_store_location(settings: StoreSettings, url: str | None, root: Path) -> None:
    if url is not None and settings.url is None:
        raise InvalidInput(
            f"{root} keeps its vectors in the embedded store; --qdrant-url {url} does not apply "
            "(use another --workspace)"
        )
    if url is not None and settings.url is not None and url != settings.url:
        raise InvalidInput(f"{root} keeps its vectors at {settings.url}, not {url}; use another --workspace")
