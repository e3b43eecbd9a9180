"""A TCP proxy that plays a bad network: it drops connections in the middle of a response, and it
can be slow.

``cut(after, times)`` arms it: the next ``times`` connections that carry more than ``after`` bytes
from the server are closed on the client's side once ``after`` bytes have passed, so the client
reads a body that ends before its Content-Length. ``delay`` holds every piece (up to 64 kB) of
what the server sends for that many seconds. What clients send is kept in ``sent``, to see how
they asked again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay = 0.0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.after = 0
        self.cuts_left = 0
        self.cuts = 0
        self.from_server = 0
        self.sent = bytearray()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, name="cutting proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self, after: int, times: int = 1) -> None:
        with self._lock:
            self.after, self.cuts_left = after, times

    def close(self) -> None:
        """Stop listening and cut every connection: a close() alone would leave the port listening
        while the accepting thread is blocked in accept() (and forwarding whoever connects next)."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self.listener.close()
        with self._lock:
            open_now, self._open = list(self._open), set()
        for s in open_now:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(("127.0.0.1", self.target_port))
                with self._lock:
                    self._open |= {client, server}
                threading.Thread(target=self._to_server, args=(client, server), daemon=True).start()
                threading.Thread(target=self._to_client, args=(client, server), daemon=True).start()

    def _to_server(self, client: socket.socket, server: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    self.sent += data
                server.sendall(data)
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _to_client(self, client: socket.socket, server: socket.socket) -> None:
        passed = 0
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                time.sleep(self.delay)
                with self._lock:
                    armed = self.cuts_left > 0 and passed + len(data) > self.after
                    if armed:
                        self.cuts_left -= 1
                        self.cuts += 1
                        data = data[: self.after - passed]
                    self.from_server += len(data)
                client.sendall(data)
                passed += len(data)
                if armed:
                    break
        with self._lock:
            self._open -= {client, server}
        for s in (client, server):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
