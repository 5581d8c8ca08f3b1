"""Pseudonymised user ids (keyed HMAC, key from the environment) and forgetting a user."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from semassoc import api
from semassoc.cli.app import app
from semassoc.errors import InvalidInput, NotFound
from semassoc.privacy import ENV_USER_KEY, pseudonymise

runner = CliRunner()
KEY = "0123456789abcdef-test-key"
EVENTS = (
    "order_id,product_id,customer_id,timestamp\n"
    "1,a,alice@example.com,2024-01-01 10:00\n1,b,alice@example.com,2024-01-01 10:00\n"
    "2,a,bob-4711,2024-01-02 10:00\n2,c,bob-4711,2024-01-02 10:00\n"
    "3,b,alice@example.com,2024-01-03 10:00\n3,c,alice@example.com,2024-01-03 10:00\n"
    "4,a,carol,2024-01-04 10:00\n4,b,carol,2024-01-04 10:00,extra\n"
)


def invoke(*args: str, code: int = 0, env: dict[str, str] | None = None):
    result = runner.invoke(app, [str(a) for a in args], env=env or {})
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def events(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text(EVENTS)
    return path


def test_pseudonym_is_keyed_and_stable():
    assert pseudonymise("alice", b"k" * 16) == pseudonymise("alice", b"k" * 16)
    assert pseudonymise("alice", b"k" * 16) != pseudonymise("alice", b"j" * 16)
    assert pseudonymise("alice", b"k" * 16).startswith("u_") and len(pseudonymise("bob", b"k" * 16)) == 34


def test_build_refuses_without_a_key(events, tmp_path):
    result = invoke(
        "behavior", "build", events, "-w", tmp_path / "ws", "--pseudonymise-users", code=2, env={ENV_USER_KEY: ""}
    )
    assert ENV_USER_KEY in result.stderr and len(result.stderr.strip().splitlines()) == 1
    invoke(
        "behavior", "build", events, "-w", tmp_path / "ws", "--pseudonymise-users", code=2, env={ENV_USER_KEY: "short"}
    )


def test_raw_ids_never_reach_the_workspace_or_the_output(events, tmp_path):
    ws = tmp_path / "ws"
    env = {ENV_USER_KEY: KEY}
    out = invoke(
        "behavior", "build", events, "-w", ws, "--pseudonymise-users", "--on-error", "skip", "--min-count", "1", env=env
    )
    text = out.output
    assert "carol" not in text and "alice" not in text  # the malformed row is reported without quoting it
    assert "row 9" in text
    for path in ws.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for raw in (b"alice", b"bob-4711", b"carol", KEY.encode()):
                assert raw not in data, (path, raw)
    # recommend hashes the id it is given with the same key; another key is refused
    rec = api_recommend(ws, "alice@example.com", env, monkeypatch=None)
    assert rec.history_size == 3
    wrong = invoke("recommend", "alice@example.com", "-w", ws, code=2, env={ENV_USER_KEY: "another-key-0123456789"})
    assert "not the key" in wrong.stderr
    # update keeps pseudonymising (read as the build did) and checks the key
    more = tmp_path / "more.csv"
    more.write_text("order_id,product_id,customer_id,timestamp\n9,c,dave,2024-02-01 10:00\n9,a,dave,2024-02-01 10:00\n")
    invoke("behavior", "update", more, "-w", ws, env=env)
    assert not any(b"dave" in p.read_bytes() for p in ws.rglob("*") if p.is_file())
    assert invoke("recommend", "dave", "-w", ws, env=env).stderr.count("2 products known") == 1


def api_recommend(ws, user, env, monkeypatch):
    import os

    old = os.environ.get(ENV_USER_KEY)
    os.environ[ENV_USER_KEY] = env[ENV_USER_KEY]
    try:
        return api.recommend(user, workspace=ws)
    finally:
        if old is None:
            del os.environ[ENV_USER_KEY]
        else:
            os.environ[ENV_USER_KEY] = old


def test_update_cannot_mix_raw_and_hashed_ids(events, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_USER_KEY, KEY)
    ws = tmp_path / "ws"
    from semassoc.behaviour.events import LoadOptions

    api.build_behavior(events, workspace=ws, options=LoadOptions(on_error="skip"))
    with pytest.raises(InvalidInput, match="are raw"):
        api.update_behavior(events, workspace=ws, pseudonymise_users=True)


def test_forget_user_removes_the_history_and_says_what_remains(events, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_USER_KEY, KEY)
    ws = tmp_path / "ws"
    invoke("behavior", "build", events, "-w", ws, "--pseudonymise-users", "--on-error", "skip", "--min-count", "1")
    before = api.recommend("alice@example.com", workspace=ws)
    assert before.history_size == 3
    result = invoke("forget-user", "alice@example.com", "-w", ws, "--json")
    report = json.loads(result.stdout)
    assert (report["products"], report["events"]) == (3, 4)
    assert report["stored_as"] == pseudonymise("alice@example.com", KEY.encode())
    assert any("pair counts" in line for line in report["remaining"])
    after = api.recommend("alice@example.com", workspace=ws)
    assert after.history_size == 0
    assert api.recommend("bob-4711", workspace=ws).history_size == 2  # others untouched
    with pytest.raises(NotFound):
        api.forget_user("alice@example.com", workspace=ws)
    text = invoke("forget-user", "bob-4711", "-w", ws).output
    assert "forgot user bob-4711" in text and "still derived from it" in text


def test_forget_user_without_pseudonyms(events, tmp_path):
    ws = tmp_path / "ws"
    invoke("behavior", "build", events, "-w", ws, "--on-error", "skip", "--min-count", "1")
    assert api.forget_user("carol", workspace=ws).products == 1
    invoke("forget-user", "nobody", "-w", ws, code=1)
