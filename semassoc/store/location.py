"""Where a remote store is: a ``--qdrant-url`` checked, and its credentials kept apart from it.

``https://user:KEY@host:6333`` is accepted for convenience (the password part, or the user part when there is no
password, is the API key); the key is used for this run only. The URL that is stored in the workspace manifest,
shown in reports and quoted in error messages is always the one without credentials; later runs take the key from
the URL again or from ``$SEMASSOC_QDRANT_API_KEY``.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

from semassoc.errors import InvalidInput

#: qdrant-client's in-process mode (tests): not a URL.
MEMORY = ":memory:"


def split_qdrant_url(url: str) -> tuple[str, str | None]:
    """The URL without credentials, and the API key it carried (``None`` when it had none).

    Raises:
        InvalidInput: not an ``http(s)://host[:port][/path]`` URL (the message never shows the credentials).

    Example:
        >>> split_qdrant_url("https://reader:s3cret@qdrant.example:6333")
        ('https://qdrant.example:6333', 's3cret')
    """
    if url == MEMORY:
        return url, None
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises ValueError on a port that is not a number in 0..65535
        host = parts.hostname
    except ValueError as exc:
        raise InvalidInput(f"--qdrant-url {redact(url)}: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidInput(f"--qdrant-url {redact(url)}: expected http(s)://host[:port], e.g. http://localhost:6333")
    key = parts.password if parts.password else parts.username
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    public = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return public, (unquote(key) if key else None)


def redact(url: str) -> str:
    """``url`` with anything between ``://`` and ``@`` replaced by ``***`` (for messages about a bad URL)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.split("@")[-1] if "@" in url else url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return f"{scheme}://{authority}{slash}{path}"
