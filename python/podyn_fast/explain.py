"""Failures as one line a person can act on: what went wrong, and the fix.

Every message goes through ``scrub``: the PostgreSQL password and the AWS secrets never appear,
whatever the underlying library put in its text.
"""

from __future__ import annotations

import re

import botocore.exceptions
import psycopg

from podyn_fast.errors import PodynError
from podyn_fast.secrets import clean, redacted

# AWS error codes for credentials AWS does not accept, and for permissions the policy lacks.
_BAD_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
}
_DENIED = {"AccessDeniedException", "AccessDenied"}


def message(e: BaseException, url: str | None) -> str:
    """One line: what failed and what to do."""
    return clean(_message(e, url), url)


def _message(e: BaseException, url: str | None) -> str:  # noqa: PLR0911  (one dispatch, flat reads best)
    if isinstance(e, PodynError):
        return str(e)
    if isinstance(e, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return (
            "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, an AWS profile "
            "(--profile or AWS_PROFILE), or run where an instance role is available"
        )
    if isinstance(e, botocore.exceptions.NoRegionError):
        return (
            "no AWS region: pass --region, or set AWS_REGION or AWS_DEFAULT_REGION, or give your AWS profile a region"
        )
    if isinstance(e, botocore.exceptions.InvalidRegionError):
        return f"{e}: pass a region such as us-east-1 with --region"
    if isinstance(e, botocore.exceptions.EndpointConnectionError):
        return (
            f"cannot reach DynamoDB at {e.kwargs.get('endpoint_url', 'its endpoint')}: check --region (a region "
            f"that does not exist has no endpoint), --endpoint-url and the network"
        )
    if isinstance(e, botocore.exceptions.ClientError):
        return _client_error(e)
    if isinstance(e, psycopg.OperationalError) and url is not None and _is_lost(e):
        return (
            f"lost the connection to PostgreSQL ({redacted(url)}): {_one_line(str(e))}: what was committed "
            f"stays; run the same command again to resume"
        )
    if isinstance(e, psycopg.OperationalError) and url is not None and _is_connect_failure(e):
        return _connect_failure(e, url)
    if isinstance(e, psycopg.Error):
        return f"PostgreSQL error: {_one_line(str(e))}"
    return f"{type(e).__name__}: {_one_line(str(e))} (run with --verbose for the traceback)"


def _client_error(e: botocore.exceptions.ClientError) -> str:
    error = e.response.get("Error", {})
    code, text = error.get("Code", ""), error.get("Message", "")
    operation = e.operation_name
    if code in _BAD_CREDENTIALS:
        return (
            f"AWS refused the credentials ({code}: {text}): check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
            f"AWS_SESSION_TOKEN or the profile, and that they are for this account and not expired"
        )
    if code in _DENIED:
        return (
            f"AWS denied {operation} ({text}): the IAM policy of these credentials lacks a permission "
            f"podyn-fast needs (the README lists them)"
        )
    if code == "ResourceNotFoundException":
        return f"DynamoDB says not found in {operation}: {text}: check the table name and --region"
    return f"DynamoDB error in {operation}: {code}: {text}"


def _is_lost(e: psycopg.OperationalError) -> bool:
    # A session cut short (a restart, a failover, the network): SQLSTATE 57P0x, or libpq's words.
    text = str(e)
    return (e.sqlstate or "").startswith("57P0") or "closed the connection" in text or "consuming input failed" in text


def _is_connect_failure(e: psycopg.OperationalError) -> bool:
    # Raised by connect(): psycopg gives no SQLSTATE then (the server never answered a query).
    return e.sqlstate is None or e.sqlstate.startswith("28") or e.sqlstate == "3D000"


def _connect_failure(e: psycopg.OperationalError, url: str) -> str:
    text = str(e)
    where = redacted(url)
    if "password authentication failed" in text or e.sqlstate == "28P01":
        return (
            f"PostgreSQL refused the password ({where}): correct the password in the URL, or set "
            f"PGPASSWORD or ~/.pgpass"
        )
    if "no password supplied" in text:
        return f"PostgreSQL asks for a password ({where}): put it in the URL, or set PGPASSWORD or ~/.pgpass"
    role = re.search(r'role "([^"]*)" does not exist', text)
    if role:
        return f"PostgreSQL has no role {role.group(1)!r} ({where}): correct the user in the URL"
    database = re.search(r'database "([^"]*)" does not exist', text)
    if database:
        return f"PostgreSQL has no database {database.group(1)!r} ({where}): create it, or correct the URL"
    if e.sqlstate and e.sqlstate.startswith("28"):
        return f"PostgreSQL refused the connection ({where}): {_one_line(text)}"
    return (
        f"cannot connect to PostgreSQL ({where}): {_one_line(text)}: check the host and port, and that "
        f"the server is running and accepts TCP connections"
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())
