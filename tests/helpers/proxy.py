"""A loopback TCP proxy that tests tell to misbehave: network faults made repeatable.

``TcpProxy(target_host, target_port)`` listens on 127.0.0.1 at a free port and forwards
each accepted connection to the target, byte for byte (TLS passes through untouched: the
client still verifies the server's certificate, which must name 127.0.0.1). Tests then:

* ``cut()``: close every open connection at once (both sides see end of file, as when a
  server dies or a NAT forgets the connection);
* ``stall()`` / ``resume()``: keep the connections open but stop forwarding (a hung
  server, a dead link that TCP has not noticed yet); new connections are accepted and
  wait too;
* ``blackhole()`` / ``resume()``: accept new connections but never connect them onwards
  nor answer (a firewall that drops, a server whose accept queue is full);
* ``refuse()``: stop listening: connections are refused until ``accept()``.

Threads, standard library only, so that benchmarks can use it too::

    with TcpProxy(server.host, server.imaps_port) as proxy:
        client = connect(proxy.host, proxy.port)
        ...
        proxy.cut()
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Callable
from types import TracebackType

__all__ = ["TcpProxy"]

LOOPBACK = "127.0.0.1"
#: How often the threads look at the proxy's mode; bounds how soon a change takes effect.
TICK = 0.02


class _Pair:
    """One proxied connection: the client's socket and the one to the target."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port``; see the module."""

    def __init__(self, target_host: str, target_port: int, *, host: str = LOOPBACK,
                 downstream: Callable[[bytes], bytes] | None = None) -> None:
        self.target = (target_host, target_port)
        #: Rewrites what the server sends before the client gets it (a plain protocol
        #: only): a test can make a server that leaves things out.
        self.downstream = downstream
        self._host = host
        self._lock = threading.Lock()
        self._pairs: set[_Pair] = set()
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._blackholed = False
        self._listener: socket.socket | None = None
        self._port = 0
        self._accept_thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        #: How many connections were accepted so far.
        self.accepted = 0

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("The proxy has not been started")
        return self._port

    def start(self) -> None:
        self._stopping.clear()
        self.accept()

    def accept(self) -> None:
        """Listen (again) on the proxy's port; the first call picks a free one."""
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self._host, self._port))
        listener.listen(64)
        listener.settimeout(TICK)
        self._port = int(listener.getsockname()[1])
        self._listener = listener
        thread = threading.Thread(target=self._accept_loop, args=(listener,),
                                  name=f"tcp-proxy-accept-{self._port}", daemon=True)
        self._accept_thread = thread
        thread.start()

    def refuse(self) -> None:
        """Stop listening: new connections are refused (open ones carry on)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join()
            self._accept_thread = None

    def stop(self) -> None:
        """Stop listening, cut every connection and wait for the threads."""
        self._stopping.set()
        self.refuse()
        self.cut()
        self._forwarding.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- faults -----------------------------------------------------------------------------
    @property
    def connections(self) -> int:
        """How many proxied connections are open now."""
        with self._lock:
            return sum(1 for pair in self._pairs if not pair.closed.is_set())

    def cut(self) -> None:
        """Close every open connection, on both sides."""
        with self._lock:
            pairs, self._pairs = self._pairs, set()
        for pair in pairs:
            pair.close()

    def stall(self) -> None:
        """Stop forwarding: connections stay open but no byte passes, either way."""
        self._forwarding.clear()

    def blackhole(self) -> None:
        """New connections are accepted, then neither answered nor forwarded."""
        self._blackholed = True

    def resume(self) -> None:
        """Forward again after ``stall()``; new connections work again after
        ``blackhole()`` (the blackholed ones stay dead)."""
        self._blackholed = False
        self._forwarding.set()

    # -- internals --------------------------------------------------------------------------
    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed
            self.accepted += 1
            pair = _Pair(client)
            with self._lock:
                self._pairs.add(pair)
            if self._blackholed:
                continue  # held open until cut() or stop(), never answered
            thread = threading.Thread(target=self._serve, args=(pair,),
                                      name=f"tcp-proxy-{self._port}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, pair: _Pair) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            pair.close()
            return
        if pair.closed.is_set():
            upstream.close()
            return
        pair.upstream = upstream
        other = {pair.client: upstream, upstream: pair.client}
        with selectors.DefaultSelector() as selector:
            for sock in other:
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
            while not pair.closed.is_set() and not self._stopping.is_set():
                if not self._forwarding.is_set():
                    self._forwarding.wait(TICK)
                    continue
                for key, _ in selector.select(TICK):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        pair.close()
                        break
                    if sock is upstream and self.downstream is not None:
                        data = self.downstream(data)
                    try:
                        self._send_all(other[sock], data)
                    except OSError:
                        pair.close()
                        break
        pair.close()
        with self._lock:
            self._pairs.discard(pair)

    @staticmethod
    def _send_all(sock: socket.socket, data: bytes) -> None:
        # Non-blocking: sendall() could send part and then raise, losing track of how much.
        view = memoryview(data)
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_WRITE)
            while view:
                try:
                    view = view[sock.send(view):]
                except BlockingIOError:
                    selector.select(TICK)
