"""DynamoDB fixtures: moto in server mode, reached over real HTTP like the production client path."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

# Enough for moto's first import of its service modules on a slow, cold CI machine.
_STARTUP_TIMEOUT = 60.0
_PORT_ATTEMPTS = 3
REGION = "us-east-1"
# What moto accepts, and what real AWS refuses.
FAKE_CREDENTIAL = "testing"


@pytest.fixture(scope="session", autouse=True)
def fake_aws_credentials(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fake credentials for every test, so no client in the suite can sign a request real AWS accepts."""
    missing = tmp_path_factory.mktemp("aws") / "none"
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", FAKE_CREDENTIAL)
        patch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_CREDENTIAL)
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        # A developer's ~/.aws files and the EC2 metadata service are other ways to real credentials.
        patch.setenv("AWS_CONFIG_FILE", str(missing))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(missing))
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _request(port: int, method: str, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        return conn.getresponse().status
    finally:
        conn.close()


def _start_moto(log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    for _ in range(_PORT_ATTEMPTS):
        port = _free_port()
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if _answers(process, port):
            return process, port
        if process.poll() is None:
            # Running but mute: another port would not help.
            process.kill()
            process.wait()
            break
        # It exited: most likely another process took the port between our probe and moto's bind.
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
    raise RuntimeError(f"moto server did not answer within {_STARTUP_TIMEOUT:g}s; {log_path}:\n{tail}")


def _answers(process: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    while process.poll() is None and time.monotonic() < deadline:
        try:
            _request(port, "GET", "/moto-api/")
        except OSError:
            time.sleep(0.1)
        else:
            return True
    return False


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory, fake_aws_credentials: None) -> Iterator[str]:
    """The URL of a moto server, in its own process for the session (``http://127.0.0.1:PORT``)."""
    process, port = _start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def dynamodb(moto_endpoint: str) -> Any:
    """A boto3 DynamoDB client on the moto server, whose state is reset before the test."""
    port = int(moto_endpoint.rsplit(":", 1)[1])
    status = _request(port, "POST", "/moto-api/reset")
    assert status == 200, f"moto reset answered HTTP {status}"
    return boto3.client(
        "dynamodb",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        aws_access_key_id=FAKE_CREDENTIAL,
        aws_secret_access_key=FAKE_CREDENTIAL,
    )
