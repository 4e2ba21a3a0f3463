"""A TCP forwarder standing for the broker, so a test can take the broker away from one client
(every connection reset) and give it back on the same port, without stopping RabbitMQ."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlparse


class Proxy:
    """A TCP forwarder to the broker that can be cut (every connection reset) and restored on the same port."""

    def __init__(self, broker_url: str) -> None:
        self.broker = urlparse(broker_url)
        self.target = (self.broker.hostname or "127.0.0.1", self.broker.port or 5672)
        probe = socket.create_server(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.accepting: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The broker URL with the proxy's host and port: what a client to be cut off uses."""
        credentials = self.broker.netloc.rsplit("@", 1)[0]
        return self.broker._replace(netloc=f"{credentials}@127.0.0.1:{self.port}").geturl()

    def start(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: rebinding works
        self.listener.settimeout(0.1)
        self.accepting = threading.Thread(target=self._accept, args=(self.listener,), daemon=True)
        self.accepting.start()

    def stop(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            # The port is free for start() only once the accepting thread let go of it too.
            listener.close()
            self.accepting.join()
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while self.listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

