"""Redaction: the PostgreSQL password (or the whole URL) and the AWS secrets appear in no message,
log line or progress output, whatever the underlying library put in its text."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

from psycopg.conninfo import conninfo_to_dict, make_conninfo

_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@:?#]*:([^@/?#]*)@")
_KEYWORD_PASSWORD = re.compile(r"""(?:^|[\s?&])password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]*)""")


def secrets_of(url: str) -> list[str]:
    """Every spelling of the password in a connection string (as written, percent-decoded, parsed
    by libpq), longest first, even when libpq cannot parse the rest: error messages quote them."""
    found: set[str] = set()
    for match in (*_URL_PASSWORD.finditer(url), *_KEYWORD_PASSWORD.finditer(url)):
        raw = match.group(1).strip("'")
        found |= {raw, unquote(raw)}
    try:
        parsed = conninfo_to_dict(url).get("password")
    except Exception:  # an unparsable string: the patterns above are all we have
        parsed = None
    if parsed:
        found.add(str(parsed))
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` with the connection string shown without its password and the password nowhere."""
    text = text.replace(url, redacted(url))
    for secret in secrets_of(url):
        text = text.replace(secret, "********")
    return text


def redacted(url: str) -> str:
    """The connection string without its password, for messages and progress output."""
    try:
        params = conninfo_to_dict(url)
    except Exception:  # an unparsable URL is shown as nothing rather than leaked
        return "<unparsable connection string>"
    params.pop("password", None)
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


def aws_secrets() -> list[str]:
    """The AWS secrets in the environment, which no message may show."""
    names = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
    return [v for n in names if (v := os.environ.get(n)) and len(v) >= 4]


def clean(text: str, url: str | None) -> str:
    """``text`` without the PostgreSQL password (or URL) and without any AWS secret."""
    if url:
        text = scrub(text, url)
    for secret in aws_secrets():
        text = text.replace(secret, "********")
    return text
