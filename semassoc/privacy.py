"""Customer privacy: pseudonymised user ids, and forgetting a user.

With ``--pseudonymise-users`` every user id is replaced, as soon as the events file is read, by a keyed hash
(HMAC-SHA256 with a secret key from ``$SEMASSOC_USER_KEY``). Raw ids then never reach the workspace (histories,
session keys, statistics) nor the messages semassoc prints: a row quoted in an error message is not shown. The
key is never stored; the workspace keeps only a check value, so that an update or a ``recommend`` with another key
is refused instead of silently missing every user. ``recommend USER_ID`` and ``forget-user USER_ID`` hash the id
they are given with the same key.

Example:
    >>> pseudonymise("customer-17", b"a secret key of 16+ bytes")
    'u_7d365ab2a6ef59c8aec55c365c60fccd'
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import Any

from semassoc.errors import InvalidInput

#: Environment variable holding the secret key of ``--pseudonymise-users``.
ENV_USER_KEY = "SEMASSOC_USER_KEY"
#: Shortest key accepted (a short key could be guessed by hashing candidate keys against known ids).
MIN_KEY_BYTES = 16
_PREFIX = "u_"


def user_key(environ: Mapping[str, str] | None = None) -> bytes:
    """The pseudonymisation key from ``$SEMASSOC_USER_KEY``.

    Raises:
        InvalidInput: the variable is unset or shorter than 16 bytes.
    """
    value = (os.environ if environ is None else environ).get(ENV_USER_KEY, "")
    key = value.encode("utf-8", "surrogateescape")
    if len(key) < MIN_KEY_BYTES:
        state = "is not set" if not value else f"is shorter than {MIN_KEY_BYTES} bytes"
        raise InvalidInput(
            f"--pseudonymise-users needs a secret key: ${ENV_USER_KEY} {state} (e.g. export {ENV_USER_KEY}="
            '"$(openssl rand -hex 32)", kept outside the workspace)'
        )
    return key


def pseudonymise(user_id: str, key: bytes) -> str:
    """The pseudonym of ``user_id``: ``u_`` and 128 bits of HMAC-SHA256 in hex (same id and key, same pseudonym)."""
    digest = hmac.new(key, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return _PREFIX + digest[:32]


def key_check(key: bytes) -> str:
    """A value stored in the workspace to recognise the key later; it reveals nothing about the key."""
    return hmac.new(key, b"semassoc user key check", hashlib.sha256).hexdigest()[:16]


def stored_key(behaviour: Mapping[str, Any], workspace: object) -> bytes | None:
    """The key to hash user ids with for a workspace whose behaviour section is ``behaviour`` (None when its user
    ids are not pseudonymised).

    Raises:
        InvalidInput: the ids are pseudonymised and the key is missing or is not the one they were hashed with.
    """
    options = behaviour.get("load_options") or {}
    if not options.get("pseudonymise_users"):
        return None
    key = user_key()
    if key_check(key) != behaviour.get("user_key_check"):
        raise InvalidInput(
            f"${ENV_USER_KEY} is not the key the user ids of {workspace} were pseudonymised with; "
            "use that key (or rebuild the behaviour statistics with the new one)"
        )
    return key
