"""The workspace: one directory holding the manifest, the embedded Qdrant files, the vector cache and (later)
behaviour statistics and tuned models.

Opening a workspace is cheap: it reads ``manifest.json`` and opens the store; the encoder is loaded only by code
that needs to encode.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from semassoc.errors import EncoderMismatch, InvalidInput, NotFound, StoreBusy, StoreDamaged, StoreUnavailable
from semassoc.faults import fault_point
from semassoc.io import WriteFailed, atomic_write_json, clean_temporaries, fsync_directory, recover_directory
from semassoc.store.base import VectorStore
from semassoc.store.embedded import EmbeddedStore
from semassoc.store.remote import RemoteStore

SCHEMA_VERSION = 1
DEFAULT_WORKSPACE = ".semassoc"
MANIFEST = "manifest.json"
ENV_WORKSPACE = "SEMASSOC_WORKSPACE"
ENV_QDRANT_URL = "SEMASSOC_QDRANT_URL"
ENV_QDRANT_API_KEY = "SEMASSOC_QDRANT_API_KEY"
ENV_BUSY_WAIT = "SEMASSOC_BUSY_WAIT"


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
    #: Embedded store: the committed generation (directory ``qdrant.N``); None with a legacy ``qdrant/`` directory
    #: or before the first index. A writer builds the next generation beside it and the manifest write commits it.
    generation: int | None = None

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
        repair = (
            "the workspace cannot be used as it is: restore the file from a backup, or move the workspace aside and "
            "re-index (copy its cache.sqlite into the new workspace to skip re-encoding)"
        )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(f"{path}: damaged workspace manifest (not UTF-8 text); {repair}") from None
        except ValueError as exc:
            raise InvalidInput(f"{path}: damaged workspace manifest (not JSON: {exc}); {repair}") from None
        except OSError as exc:
            raise InvalidInput(f"{path}: unreadable workspace manifest: {exc.strerror or exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("store", {}), dict):
            raise InvalidInput(f"{path}: damaged workspace manifest (not a manifest object); {repair}")
        version = data.get("schema_version", 0)
        if not isinstance(version, int):
            raise InvalidInput(f"{path}: damaged workspace manifest (schema_version {version!r}); {repair}")
        if version > SCHEMA_VERSION:
            raise InvalidInput(f"{path}: written by a newer semassoc (schema {version}); upgrade")
        store_known = set(StoreSettings.__dataclass_fields__)
        known = set(cls.__dataclass_fields__) - {"store"}
        try:
            store = StoreSettings(**{k: v for k, v in data.pop("store", {}).items() if k in store_known})
            manifest = cls(store=store, **{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise InvalidInput(f"{path}: damaged workspace manifest ({exc}); {repair}") from None
        problem = _manifest_problem(manifest)
        if problem:
            raise InvalidInput(f"{path}: damaged workspace manifest ({problem}); {repair}")
        return manifest

    def write(self, path: Path) -> None:
        atomic_write_json(path, asdict(self), sort_keys=True)  # a crash leaves the old manifest or the new one


def _manifest_problem(m: Manifest) -> str | None:
    """The first field of a manifest with an impossible type or value, else None."""
    checks: list[tuple[str, Any, tuple[type, ...]]] = [
        ("encoder_id", m.encoder_id, (str, type(None))),
        ("encoder_model", m.encoder_model, (str, type(None))),
        ("dim", m.dim, (int, type(None))),
        ("max_seq_length", m.max_seq_length, (int, type(None))),
        ("prompts_digest", m.prompts_digest, (str, type(None))),
        ("prompts_dir", m.prompts_dir, (str, type(None))),
        ("products", m.products, (int,)),
        ("last_index", m.last_index, (dict,)),
        ("behaviour", m.behaviour, (dict,)),
        ("store.url", m.store.url, (str, type(None))),
        ("store.collection", m.store.collection, (str,)),
        ("store.generation", m.store.generation, (int, type(None))),
    ]
    for name, value, kinds in checks:
        if not isinstance(value, kinds) or isinstance(value, bool):
            return f"{name} is {value!r}"
    if (m.dim is not None and m.dim < 1) or m.products < 0 or (m.store.generation or 0) < 0:
        return "a negative count"
    return None


def resolve_workspace_path(path: str | Path | None) -> Path:
    """``--workspace``, else ``$SEMASSOC_WORKSPACE``, else ``./.semassoc``."""
    return Path(path or os.environ.get(ENV_WORKSPACE) or DEFAULT_WORKSPACE)


class Workspace:
    """An open workspace. Use :meth:`open` (reading) or :meth:`create_or_open` (writing), as a context manager.

    Writers hold the workspace lock (``lock``); readers take no lock. The embedded store is kept in generations
    (``qdrant.N``): a writer that changes vectors builds generation N+1 beside the committed one
    (:meth:`stage_store`) and the manifest write (:meth:`save`) commits it, so readers keep answering from the last
    committed generation while an ``index`` runs, and a killed writer leaves the committed state intact.

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
        self._staged: int | None = None  # the generation being written, committed by save()

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
        if writer:
            _check_directory(root)
        lock = _lock(root) if writer else None  # a writer reads the manifest under the lock: no stale view
        try:
            manifest_path = root / MANIFEST
            if not manifest_path.is_file():
                raise NotFound(
                    f"no semassoc workspace at {root} (run `semassoc index CATALOG` first, or pass --workspace)"
                )
            manifest = Manifest.read(manifest_path)
            url, api_key = _public_url(qdrant_url or os.environ.get(ENV_QDRANT_URL))
            _check_store_location(manifest.store, url, root)
        except BaseException:
            _unlock(lock)
            raise
        ws = cls(root, manifest, writer=writer, store_client=store_client, api_key=api_key)
        ws._lock_handle = lock
        return ws

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
        """Open a workspace for writing, creating it (with the given store settings) when it does not exist.

        The lock is taken before anything is looked at, so two first runs on one path get "in use", and the
        manifest of a new workspace is written at once: a first run killed later leaves a workspace that the next
        run continues.
        """
        root = resolve_workspace_path(path)
        given = qdrant_url or os.environ.get(ENV_QDRANT_URL)
        url, api_key = _public_url(given)  # the manifest keeps the URL without credentials
        if url is not None and url.strip() == ":memory:" and store_client is None:
            # Without a client that outlives the call (tests, notebooks pass one), :memory: forgets everything.
            raise InvalidInput(
                "--qdrant-url :memory: keeps nothing after the command ends; a workspace needs a persistent store "
                "(leave --qdrant-url out for the embedded store, or give a server URL)"
            )
        _check_directory(root)
        lock = _lock(root)
        try:
            if (root / MANIFEST).is_file():
                manifest = Manifest.read(root / MANIFEST)
                _check_store_location(manifest.store, url, root)
                if collection and collection != manifest.store.collection:
                    raise InvalidInput(
                        f"{root} uses collection '{manifest.store.collection}', not '{collection}'; "
                        "use another --workspace for another collection"
                    )
                ws = cls(root, manifest, writer=True, store_client=store_client, api_key=api_key)
                ws._lock_handle = lock
                return ws
            leftovers = [entry.name for entry in root.iterdir() if entry.name != "lock"]
            if leftovers and not all(_is_interrupted_first_run(name) for name in leftovers):
                raise InvalidInput(f"{root} exists and is not a semassoc workspace; choose another --workspace")
            for name in leftovers:  # what an older release left when its first run was killed: nothing committed
                _remove(root / name)
            settings = StoreSettings(
                url=url, collection=collection or "semassoc_products", shards=shards, replicas=replicas
            )
            ws = cls(root, Manifest(store=settings), writer=True, store_client=store_client, api_key=api_key)
            ws._lock_handle = lock
            ws.save()
            return ws
        except BaseException:
            _unlock(lock)
            raise

    # -- parts ---------------------------------------------------------------------------------------------------
    def store_path(self, generation: int | None) -> Path:
        """The directory of an embedded store generation (None: the legacy ``qdrant/``)."""
        return self.path / ("qdrant" if generation is None else f"qdrant.{generation}")

    @property
    def store(self) -> VectorStore:
        """The vector store (opened on first use): the committed generation, or the staged one of a writer."""
        if self._store is None:
            settings = self.manifest.store
            if settings.url is None:
                self._store = self._open_committed()
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

    def _open_committed(self) -> EmbeddedStore:
        """Open the committed generation. A reader that finds it held by another reader waits briefly (up to
        :func:`busy_wait_seconds`); one that finds it retired by a writer's commit re-reads the manifest and opens
        the new one."""
        deadline = time.monotonic() + busy_wait_seconds()
        while True:
            generation = self.manifest.store.generation
            path = self.store_path(generation)
            expected = self.manifest.products if self.manifest.encoder_id else 0
            try:
                if not (path / "edge_config.json").is_file():
                    if expected == 0 or self._staged is not None:
                        return EmbeddedStore(path, dim=None, create=False)
                    raise _StoreMoved(path)
                return EmbeddedStore(path, dim=self.manifest.dim, create=False)
            except (StoreBusy, _StoreMoved, StoreUnavailable) as exc:
                fresh = None if self.writer else _reread(self.path / MANIFEST)
                if fresh is not None and fresh.store.generation != generation:
                    self.manifest = fresh  # a writer committed meanwhile: open its generation
                    continue
                if isinstance(exc, StoreBusy) and not self.writer and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                if isinstance(exc, _StoreMoved):
                    raise StoreDamaged(
                        f"{path}: the vector store of the workspace is missing ({expected} products expected); "
                        f"repair: `semassoc index CATALOG --rebuild --workspace {self.path}`"
                    ) from None
                raise

    def stage_store(self, *, fresh: bool) -> VectorStore:
        """Writers: the store to write to until :meth:`save` commits it.

        Embedded: a new generation beside the committed one, a copy of it (``fresh=False``) or empty
        (``fresh=True``: another encoder, a rebuild). Remote: the collection itself (dropped when ``fresh``).
        """
        if not self.writer:
            raise StoreBusy("internal: the workspace was opened read-only")
        if self.manifest.store.url is not None:
            store = self.store
            if fresh:
                store.drop()
            return store
        if self._staged is not None:
            return self.store
        if self._store is not None:
            self._store.close()
            self._store = None
        committed = self.manifest.store.generation
        self.discard_uncommitted()
        numbers = [committed or 0, *_generations(self.path)]
        target = max(numbers) + 1
        destination = self.store_path(target)
        source = self.store_path(committed)
        if not fresh and (source / "edge_config.json").is_file():
            try:  # a kill during the copy leaves an uncommitted generation, removed by the next writer
                shutil.copytree(source, destination)
            except OSError as exc:
                _remove(destination)
                raise WriteFailed(f"{destination}: cannot copy the store: {exc.strerror or exc}") from None
        fault_point("store.staged")
        self._staged = target
        try:
            self._store = EmbeddedStore(destination, dim=None if fresh else self.manifest.dim, create=True)
        except StoreDamaged as exc:  # the committed generation's files are damaged: name them, not the copy
            self._staged = None
            _remove(destination)
            raise StoreDamaged(str(exc).replace(str(destination), str(source))) from None
        return self._store

    def discard_uncommitted(self) -> None:
        """Writers: remove store generations no manifest points to (a killed writer's work, retired ones)."""
        committed = self.manifest.store.generation
        for number in _generations(self.path):
            if number != committed and number != self._staged:
                _remove(self.store_path(number))
        if committed is not None and self.store_path(None).exists():
            _remove(self.store_path(None))  # the legacy directory, after its first copy was committed
        clean_temporaries(self.path / MANIFEST)

    @property
    def behaviour_dir(self) -> Path:
        """Where the behaviour statistics live (user histories and the basket log inside, written with them).

        A directory replacement killed between its two renames leaves the committed statistics under
        ``.behaviour.old-*``: a writer renames them back; a reader (no lock) reads them there."""
        canonical = self.path / "behaviour"
        if canonical.exists():
            return canonical
        if self.writer:
            recover_directory(canonical)
            return canonical
        olds = sorted(self.path.glob(".behaviour.old-*"), key=lambda p: p.stat().st_mtime)
        return olds[-1] if olds else canonical

    @property
    def users_dir(self) -> Path:
        """Where the user histories live: inside the behaviour directory (a workspace written before that keeps
        them in ``users/`` until its next behaviour write)."""
        inside = self.behaviour_dir / "users"
        legacy = self.path / "users"
        return legacy if not inside.exists() and legacy.exists() else inside

    def check_encoder(self, encoder_id: str) -> None:
        """Refuse an encoder other than the one that built the workspace."""
        built = self.manifest.encoder_id
        if built is not None and built != encoder_id:
            raise EncoderMismatch(
                f"this workspace was built with encoder '{built}', not '{encoder_id}'; query it with "
                f"--model {self.manifest.encoder_model or built}, or re-index with `semassoc index --model ...`"
            )

    def save(self) -> None:
        """Write the manifest (writers only). With a staged store generation, this is its commit: the store is
        flushed and closed first, the manifest then points to it, and the previous generation is removed."""
        if not self.writer:
            raise StoreBusy("internal: the workspace was opened read-only")
        staged = self._staged
        previous = self.manifest.store.generation
        if staged is not None:
            if self._store is not None:
                self._store.close()  # flushed: the generation is complete on disk before the manifest names it
                self._store = None
            fsync_directory(self.store_path(staged))
            fault_point("store.before_commit")
            self.manifest.store.generation = staged
        self.manifest.updated = now_iso()
        self.manifest.write(self.path / MANIFEST)
        if staged is not None:
            fault_point("store.after_commit")
            self._staged = None
            if previous != staged:
                _remove(self.store_path(previous))

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._staged is not None:  # never committed: the writer failed
            _remove(self.store_path(self._staged))
            self._staged = None
        _unlock(self._lock_handle)
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


class _StoreMoved(Exception):
    """The committed store directory is missing (retired by a writer's commit, or lost)."""


def busy_wait_seconds() -> float:
    """How long a reader waits for a store held by another reader (``SEMASSOC_BUSY_WAIT``, default 2 s)."""
    try:
        return max(0.0, float(os.environ.get(ENV_BUSY_WAIT, "2")))
    except ValueError:
        return 2.0


def _reread(path: Path) -> Manifest | None:
    try:
        return Manifest.read(path)
    except InvalidInput:
        return None


def _generations(root: Path) -> list[int]:
    numbers = []
    for entry in root.glob("qdrant.*"):
        suffix = entry.name.split(".", 1)[1]
        if suffix.isdigit():
            numbers.append(int(suffix))
    return sorted(numbers)


def _is_interrupted_first_run(name: str) -> bool:
    """Entries a first run of an older release could leave before its manifest existed."""
    return name in (
        "qdrant",
        "cache.sqlite",
        "cache.sqlite-wal",
        "cache.sqlite-shm",
        "behaviour",
        "users",
    ) or name.startswith((".behaviour.", ".users.", ".manifest.json.", "manifest.json.tmp", "qdrant."))


def _remove(path: Path) -> None:
    """Remove a file or directory tree: first renamed out of the way (atomic), then deleted."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink():
        trash = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(path, trash)
        except OSError:
            trash = path
        shutil.rmtree(trash, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _check_directory(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise InvalidInput(f"{root} is a file, not a workspace directory; choose another --workspace")


def _lock(root: Path) -> Any:
    """Take the workspace's writer lock (creating the directory if needed)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only file system, no permission: the path is the user's choice (exit 2)
        raise InvalidInput(f"cannot create the workspace {root}: {exc.strerror or exc}") from None
    try:
        handle = (root / "lock").open("a")
    except OSError as exc:
        raise InvalidInput(f"cannot write to the workspace {root}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreBusy(
            f"workspace is in use: another semassoc process is writing to {root}; try again when it is done"
        ) from None
    for leftover in root.glob(".trash-*"):  # what a kill during a removal left; nobody reads trash
        shutil.rmtree(leftover, ignore_errors=True)
    return handle


def _unlock(handle: Any) -> None:
    if handle is not None:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _check_store_location(settings: StoreSettings, url: str | None, root: Path) -> None:
    if url is not None and settings.url is None:
        raise InvalidInput(
            f"{root} keeps its vectors in the embedded store; --qdrant-url {url} does not apply "
            "(use another --workspace)"
        )
    if url is not None and settings.url is not None and url != settings.url:
        raise InvalidInput(f"{root} keeps its vectors at {settings.url}, not {url}; use another --workspace")
