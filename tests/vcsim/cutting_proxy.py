"""A loopback TCP proxy that counts the bytes it relays to the client and can cut one connection
after a given number of them, to test resumable downloads against a real server."""
from __future__ import annotations

import socket
import threading


class CuttingProxy:
    def __init__(self, target: tuple[str, int], cut_after: int | None = None):
        self.target = target
        self.cut_after = cut_after
        self.to_client = 0
        self.connections = 0
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "CuttingProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            server = socket.create_connection(self.target, timeout=30)
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        sent = 0
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if downstream:
                    with self._lock:
                        cut = self.cut_after is not None and self.cuts == 0 and sent + len(data) > self.cut_after
                        if cut:
                            data = data[: self.cut_after - sent]
                            self.cuts += 1
                        self.to_client += len(data)
                    dst.sendall(data)
                    sent += len(data)
                    if cut:
                        break
                else:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
