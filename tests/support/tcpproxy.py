"""A TCP proxy in front of the moto server that a test can cut (mid-transfer) and restore.

Cutting closes every open connection; while the store is down, each new connection is
accepted and closed at once (a store that drops every request) and counted in
``attempts_while_down``, so a test bounds a client's retries by a count, not by the time they
took. Restoring forwards again on the same port. The moto server behind it keeps its buckets,
so a rerun after the outage sees what was written before.
"""

from __future__ import annotations

import socket
import threading


class CuttableProxy:
    def __init__(self, upstream_port: int, cut_after_bytes: int | None = None):
        self.upstream = ("127.0.0.1", upstream_port)
        self.cut_after = cut_after_bytes
        self.sent = 0  # client → server bytes forwarded
        self.cuts = 0
        self.attempts_while_down = 0  # connections made while cut, each dropped at once
        self._down = False
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(16)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            with self._lock:
                down = self._down
                self.attempts_while_down += down
            if down:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._conns += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                if upstream:
                    with self._lock:
                        self.sent += len(data)
                        over = self.cut_after is not None and self.sent > self.cut_after
                    if over:
                        self.cut()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        """The store goes down: every connection dropped, new ones dropped as they come."""
        with self._lock:
            self.cut_after = None
            self.cuts += 1
            self._down = True
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        with self._lock:
            self._down = False
