"""A TCP forwarder standing for the broker, so a test can take the broker away from one client
and give it back on the same port, without stopping RabbitMQ.

The ways a network fails a client:

* ``stop()``: every connection reset, new ones refused (the broker's host is up, its port closed);
* ``reset()``: every connection reset, and each new one accepted and reset at once, counted
  in ``resets``, so a test can see each attempt of a client and heal the outage after the
  n-th;
* ``blackhole()``: a silent partition. Connections are accepted and kept open, but nothing
  is forwarded either way and nobody is told; ``held`` counts what was held back.

``restore()`` ends a reset or a blackhole. What a blackhole held back is then delivered in
order, as TCP does after a real partition, so a connection that nobody gave up on carries on.
"""

from __future__ import annotations

import socket
import struct
import threading
from urllib.parse import urlparse


class Proxy:
    """A TCP forwarder to the broker that can be cut (reset or blackholed) and restored on the same port."""

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
        self.flowing = threading.Event()  # clear: blackholed
        self.flowing.set()
        self.resetting = False
        self.resets = 0  # connections accepted and reset at once
        self.held = 0  # chunks of data a blackhole has held back

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
        self._reset_all()

    def reset(self) -> None:
        """Reset every connection, and each new one as soon as it is accepted."""
        self.resetting = True
        self._reset_all()

    def blackhole(self) -> None:
        """Keep every connection open and accept new ones, but forward nothing from now on."""
        self.flowing.clear()

    def restore(self) -> None:
        """End a reset or a blackhole: forward again, starting with what a blackhole held back."""
        self.resetting = False
        self.flowing.set()

    def _reset_all(self) -> None:
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            _shutdown(sock)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while self.listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.resetting:
                self.resets += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
                client.close()
                continue
            with self.lock:
                self.sockets.append(client)
            # A connection accepted inside a blackhole reaches the broker only once it is over.
            threading.Thread(target=self._connect_upstream, args=(client,), daemon=True).start()

    def _connect_upstream(self, client: socket.socket) -> None:
        if not self._wait_flowing(client):
            return
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        with self.lock:
            self.sockets.append(upstream)
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _wait_flowing(self, sock: socket.socket) -> bool:
        """Wait out a blackhole; False if the connection was closed meanwhile (stop())."""
        while not self.flowing.wait(0.1):
            if sock.fileno() == -1:
                return False
        return sock.fileno() != -1

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.flowing.is_set():
                    with self.lock:
                        self.held += 1
                if not self._wait_flowing(sink):
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
