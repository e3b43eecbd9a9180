"""A local DynamoDB emulator: moto's server in a process of its own, reached over real HTTP.

The demo runs on it, and so do the tests that need DynamoDB Streams or the full API (the fast Scan
server in tests/servers covers bulk reads).
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from pathlib import Path

from podyn_fast.errors import EmulatorError

# Enough for moto's first import of its service modules on a slow, cold machine.
STARTUP_TIMEOUT = 60.0
_PORT_ATTEMPTS = 3


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def request(port: int, method: str, path: str) -> int:
    """The HTTP status of one request to the emulator (its /moto-api/ endpoints)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        return conn.getresponse().status
    finally:
        conn.close()


class LocalDynamo:
    """moto's server on a free port of 127.0.0.1, logging to ``log_path``; stop() ends it."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Start the server and return its endpoint URL.

        Raises:
            EmulatorError: moto is not installed, or the server did not answer in time.
        """
        try:
            import moto.server  # noqa: F401, PLC0415  (only to tell "not installed" apart)
        except ImportError:
            raise EmulatorError(
                "the DynamoDB emulator (moto's server) is not installed: pip install 'podyn-fast[demo]'"
            ) from None
        for _ in range(_PORT_ATTEMPTS):
            self.port = _free_port()
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Its own session: a Ctrl-C meant for the caller must not stop it first.
                    start_new_session=True,
                )
            if self._answers():
                return self.endpoint
            if self.process.poll() is None:
                break  # running but mute: another port would not help
            # It exited: most likely another process took the port between our probe and moto's bind.
        self.stop()
        tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        raise EmulatorError(
            f"the DynamoDB emulator did not answer within {STARTUP_TIMEOUT:g} s; {self.log_path}:\n{tail}"
        )

    def _answers(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                request(self.port, "GET", "/moto-api/")
            except OSError:
                time.sleep(0.1)
            else:
                return True
        return False

    def reset(self) -> None:
        """Forget every table."""
        status = request(self.port, "POST", "/moto-api/reset")
        if status != 200:
            raise EmulatorError(f"moto reset answered HTTP {status}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
