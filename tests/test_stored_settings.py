"""What a workspace stores about where things are: the Qdrant URL without credentials, prompts as an absolute path."""

from __future__ import annotations

import pytest

from semassoc import api
from semassoc.store.location import redact, split_qdrant_url
from semassoc.text.encoder import HashingEncoder


def test_split_qdrant_url_keeps_credentials_apart():
    expected = ("https://qdrant.example:6333/base", "s3cret")
    assert split_qdrant_url("https://user:s3cret@qdrant.example:6333/base") == expected
    assert split_qdrant_url("http://only-key@[::1]:6333") == ("http://[::1]:6333", "only-key")
    assert split_qdrant_url("http://localhost:6333") == ("http://localhost:6333", None)
    assert split_qdrant_url(":memory:") == (":memory:", None)
    assert redact("http://user:pw@host:1/x") == "http://***@host:1/x"


def test_manifest_and_report_never_hold_url_credentials(catalog_csv, tmp_path):
    qdrant_client = pytest.importorskip("qdrant_client")
    client = qdrant_client.QdrantClient(location=":memory:")
    url = "http://reader:s3cret-key@qdrant.example:6333"
    report = api.index_catalog(
        catalog_csv, workspace=tmp_path / "ws", encoder=HashingEncoder(16), qdrant_url=url, store_client=client
    )
    assert "s3cret" not in repr(report.to_dict()) and "reader" not in repr(report.to_dict())
    for path in (tmp_path / "ws").rglob("*"):
        assert not path.is_file() or b"s3cret" not in path.read_bytes(), path
    info = api.info(workspace=tmp_path / "ws", qdrant_url=url, store_client=client)
    assert info.store_location == "http://qdrant.example:6333"
    # the same URL with other credentials (or none) is the same store
    api.info(workspace=tmp_path / "ws", qdrant_url="http://qdrant.example:6333", store_client=client)


def test_prompts_dir_is_stored_absolute(catalog_csv, tmp_path, monkeypatch):
    import shutil

    from semassoc.text.prompts import default_prompts_dir
    from semassoc.workspace import Workspace

    shutil.copytree(default_prompts_dir(), tmp_path / "my-prompts")
    monkeypatch.chdir(tmp_path)
    api.index_catalog(catalog_csv, workspace=tmp_path / "ws", encoder=HashingEncoder(16), prompts="my-prompts")
    with Workspace.open(tmp_path / "ws") as ws:
        assert ws.manifest.prompts_dir == str((tmp_path / "my-prompts").resolve())
