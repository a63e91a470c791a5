"""A loopback TCP proxy that can be stopped and restarted on the same port, so a test can take a
real server away from a client (connection refused, open connections cut) and bring it back.
With ``tls`` it also terminates TLS in front of a plain-HTTP server."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from collections.abc import Iterator

from airflow_ops.devstack.ports import free_port


class LoopbackProxy:
    def __init__(self, target_host: str, target_port: int, tls: ssl.SSLContext | None = None) -> None:
        self.target = (target_host, target_port)
        self.tls = tls
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> LoopbackProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, scheme: str, userinfo: str = "", path: str = "") -> str:
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Stop listening and cut every open connection (the client sees the server vanish)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone does not on Linux.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._conns.add(client)
        upstream = None
        try:
            if self.tls is not None:
                client = self.tls.wrap_socket(client, server_side=True)
                with self._lock:
                    self._conns.add(client)
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
            with self._lock:
                self._conns.add(upstream)
            self._pump(client, upstream)
        except OSError:  # includes TLS handshake failures: the client gave up on our certificate
            pass
        finally:
            for s in (client, upstream):
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                    s.close()
                    with self._lock:
                        self._conns.discard(s)

    @staticmethod
    def _pump(client: socket.socket, upstream: socket.socket) -> None:
        # One thread per connection: an SSL socket must not be read and written concurrently.
        peers = {client: upstream, upstream: client}
        while True:
            readable, _, _ = select.select(list(peers), [], [])
            for src in readable:
                data = src.recv(65536)
                if not data:
                    return
                # Decrypted bytes may wait inside the SSL object where select() cannot see them.
                while isinstance(src, ssl.SSLSocket) and src.pending():
                    data += src.recv(src.pending())
                peers[src].sendall(data)


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP but never answers: the kernel completes handshakes and
    nobody ever reads or writes. For testing that clients time out."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        yield silent.getsockname()[1]
