"""A loopback TCP proxy that can freeze: a database that accepts connections and never answers.

    with TcpProxy("127.0.0.1", pg_port) as proxy:
        dsn = make_conninfo(dsn, host="127.0.0.1", port=proxy.port)
        proxy.freeze()   # a paused server, or one whose packets are dropped
        proxy.thaw()     # it answers again, every held connection intact
        proxy.cut()      # a server gone: every connection dropped, each new one closed at once
        proxy.restore()  # it is back

While frozen, nothing is forwarded either way: the bytes wait in the kernel's
buffers, as with a server stopped by SIGSTOP, and new connections are accepted and
held without reaching the target. Thawed, everything held goes through.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

POLL_SECONDS = 0.05


class TcpProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thawed = threading.Event()
        self._thawed.set()
        self._closed = threading.Event()
        self._cut = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def freeze(self) -> None:
        self._thawed.clear()

    def thaw(self) -> None:
        self._thawed.set()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            held, self._sockets = self._sockets, []
        for s in held:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self._cut.clear()

    def __enter__(self) -> TcpProxy:
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._thawed.set()
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()

    def _track(self, s: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(s)
        return s

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(self._track(client),), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._thawed.wait()
        if self._closed.is_set() or self._cut.is_set():
            client.close()
            return
        try:
            upstream = self._track(socket.create_connection(self.target))
        except OSError:
            client.close()
            return
        peers = {client: upstream, upstream: client}
        try:
            while not self._closed.is_set() and not self._cut.is_set():
                if not self._thawed.is_set():
                    self._thawed.wait(POLL_SECONDS)
                    continue
                readable, _, _ = select.select(list(peers), [], [], POLL_SECONDS)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    peers[s].sendall(data)
        except OSError:
            return
        finally:
            for s in peers:
                with contextlib.suppress(OSError):
                    s.close()
