"""A TCP proxy to PostgreSQL that reads the protocol's framing and breaks a connection at a chosen
point of a transaction, the way networks break.

Two ways to break:
- ``reset``: the client's side is reset at once (it sees ECONNRESET); the server's side stays open
  and silent, so the server keeps the session, its transaction and its locks, as it does until TCP
  notices a vanished client.
- ``silent``: nothing more crosses in either direction, and both sides stay open: the client's
  TCP stack still gets every byte acknowledged (by this proxy's), so no keepalive and no TCP
  timeout ever fires. Only asking the server what the session is doing reveals it.

The points of a transaction that holds a COPY (as a follower's apply does):
- ``copy``: the COPY statement is not forwarded;
- ``copy-data``: the COPY statement is, its first data message is not;
- ``commit``: the COMMIT is not forwarded;
- ``reply``: the COMMIT is, and the server's answer to it is not.

The first client message that reaches an armed point breaks its connection; later connections
(the client reconnecting) pass untouched until the next ``arm``.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field

POINTS = ("copy", "copy-data", "commit", "reply")
KINDS = ("reset", "silent")

# Untyped messages before the startup message: SSL and GSS encryption requests, answered 'N'.
_STARTUP_CODE = 196608
_ENCRYPTION_REQUESTS = (80877103, 80877104)


@dataclass
class _Armed:
    point: str
    kind: str
    fired: threading.Event = field(default_factory=threading.Event)


class _Pair:
    """One client connection and its connection to the server."""

    def __init__(self, proxy: PgProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy, self.client, self.server = proxy, client, server
        self.started = False
        self.in_copy_transaction = False
        self.silent = False
        self.reset_on_reply = False
        self.swallow_replies = False

    def run(self) -> None:
        threading.Thread(target=self._from_client, daemon=True).start()
        threading.Thread(target=self._from_server, daemon=True).start()

    def _from_client(self) -> None:
        buffer = b""
        with contextlib.suppress(OSError):
            while data := self.client.recv(65536):
                if self.silent:
                    continue  # read and dropped: the client's sends keep being acknowledged
                buffer += data
                while (message := self._next_message(buffer)) is not None:
                    buffer = buffer[len(message) :]
                    if not self._forward(message):
                        break
                if self.silent:
                    buffer = b""

    def _next_message(self, buffer: bytes) -> bytes | None:
        """The first whole message in ``buffer``, or None until it has arrived."""
        header = 4 if not self.started else 5
        if len(buffer) < header:
            return None
        length = struct.unpack("!I", buffer[header - 4 : header])[0]
        size = length if not self.started else 1 + length
        return buffer[:size] if len(buffer) >= size else None

    def _forward(self, message: bytes) -> bool:
        """Send ``message`` on, unless an armed point breaks the connection here; False then."""
        if not self.started:
            if struct.unpack("!I", message[4:8])[0] == _STARTUP_CODE:
                self.started = True
            self.server.sendall(message)
            return True
        kind = message[:1]
        # A simple query's text, or an extended one's after its statement name.
        query = message[5:] if kind == b"Q" else message[5:].partition(b"\0")[2] if kind == b"P" else b""
        query = query.lstrip().upper()
        point = None
        if query.startswith(b"COPY "):
            point = "copy"
            self.in_copy_transaction = True
        elif kind == b"d" and self.in_copy_transaction:
            point = "copy-data"
        elif query.startswith(b"COMMIT") and self.in_copy_transaction:
            point = "commit"
            self.in_copy_transaction = False
        armed = self.proxy.take(point) if point else None
        if armed is None and point == "commit" and (armed := self.proxy.take("reply")) is not None:
            # The COMMIT goes through; what the server answers to it does not.
            self.server.sendall(message)
            self.reset_on_reply = armed.kind == "reset"
            self.swallow_replies = True
            self.silent = armed.kind == "silent"
            armed.fired.set()
            return True
        if armed is None:
            self.server.sendall(message)
            return True
        self._break(armed.kind)
        armed.fired.set()
        return False

    def _from_server(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.server.recv(65536):
                if self.swallow_replies:
                    if self.reset_on_reply:
                        self.reset_on_reply = False
                        self._break("reset")
                    continue
                if not self.silent:
                    self.client.sendall(data)

    def _break(self, kind: str) -> None:
        self.silent = True
        if kind == "reset":
            # Wake this pair's own reader first: a socket closed while a thread is blocked in
            # recv on it stays open (and silent) until that call returns.
            with contextlib.suppress(OSError):
                self.client.shutdown(socket.SHUT_RD)
            self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.client.close()


class PgProxy:
    """Listens on 127.0.0.1 and forwards to PostgreSQL at ``port``."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._armed: _Armed | None = None
        self._pairs: list[_Pair] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, point: str, kind: str) -> threading.Event:
        """Break the next connection that reaches ``point``, in the way ``kind`` says; the event
        is set once it has."""
        assert point in POINTS and kind in KINDS, (point, kind)
        armed = _Armed(point, kind)
        with self._lock:
            self._armed = armed
        return armed.fired

    def take(self, point: str) -> _Armed | None:
        with self._lock:
            armed = self._armed
            if armed is None or armed.point != point:
                return None
            self._armed = None
            return armed

    def reset_all(self) -> None:
        """Reset every client connection now, whatever it is doing; the servers' sides stay open."""
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair._break("reset")

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            pair = _Pair(self, client, server)
            with self._lock:
                self._pairs.append(pair)
            pair.run()

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in (pair.client, pair.server):
                with contextlib.suppress(OSError):
                    s.close()
