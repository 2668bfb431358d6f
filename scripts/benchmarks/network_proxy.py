#!/usr/bin/env python3
"""A TCP proxy on loopback that makes a connection behave like a slower network.

    python scripts/benchmarks/network_proxy.py --target-port 5432 --profile "WAN 30 ms"

In a program::

    with ShapingProxy(target_port, "WAN 30 ms") as proxy:
        connect to 127.0.0.1:proxy.port ...
        proxy.counters(); proxy.reset()

The model, for each direction on its own: a chunk read from one side starts
its transmission at max(its arrival, the time the link is free), occupies the
link for len * 8 / bandwidth seconds, and is handed to the other side RTT/2
after its last bit left. Chunks keep their order. The link of a direction is
shared by all the proxy's connections, as an uplink is. A new connection moves
no byte before one RTT has passed (the TCP handshake). An end of stream (FIN)
is delayed like data.

Not modelled: TCP slow start and congestion windows, loss, jitter, TLS. A
real link is slower than this one after an idle period, so figures measured
through it are lower bounds.

Round trips, exact for request/response protocols (HTTP/1.1, Postgres): a
round trip is counted each time bytes arrive from the client on a connection
whose previous bytes (if any) came from the server. A request written in
several pieces is one round trip; so is a pipelined batch sent before the
server answered. The proxy sees a server's bytes before the client does, so
a client's next request always follows them. A server that speaks first
(a greeting) makes the client's reply a round trip as well.

Bounded: at most ``max_connections`` at once (others are closed at once and
counted as refused), at most ``max_buffer`` bytes waiting per direction of a
connection (then the sender waits, as with a full TCP window), and the proxy
stops by itself ``lifetime`` seconds after it started.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Self


@dataclass(frozen=True)
class Profile:
    name: str
    rtt: float  # seconds, there and back
    bandwidth: float  # bits per second, each direction


PROFILES = {p.name: p for p in (
    Profile("LAN 1 ms", 0.001, 1e9),
    Profile("WAN 30 ms", 0.030, 50e6),
    Profile("far 100 ms", 0.100, 10e6),
)}


@dataclass(frozen=True)
class Counters:
    bytes_to_server: int = 0
    bytes_to_client: int = 0
    round_trips: int = 0
    connections: int = 0  # accepted since the last reset
    refused: int = 0  # over max_connections


# Small enough that a large message trickles out chunk by chunk rather than
# arriving whole after its last byte, as packets would.
CHUNK = 16 * 1024


class _Pipe:
    """One direction of one connection: chunks waiting for their delivery time."""

    def __init__(self, src: socket.socket, dst: socket.socket, to_server: bool, limit: int) -> None:
        self.src, self.dst, self.to_server, self.limit = src, dst, to_server, limit
        self.chunks: deque[tuple[float, bytes]] = deque()  # b"": end of stream
        self.waiting = 0
        self.aborted = False
        self.cond = threading.Condition()

    def put(self, deliver_at: float, data: bytes) -> None:
        with self.cond:
            while self.waiting >= self.limit and not self.aborted:
                self.cond.wait()
            self.chunks.append((deliver_at, data))
            self.waiting += len(data)
            self.cond.notify_all()

    def next_due(self) -> bytes | None:
        """The next chunk once its time has come; None when aborted."""
        with self.cond:
            while not self.aborted:
                if self.chunks:
                    # Condition.wait's timeout is precise to microseconds, unlike
                    # select's and asyncio's (milliseconds): it matters for the LAN.
                    late = self.chunks[0][0] - time.monotonic()
                    if late <= 0:
                        return self.chunks[0][1]
                    self.cond.wait(late)
                else:
                    self.cond.wait()
            return None

    def delivered(self) -> None:
        with self.cond:
            self.waiting -= len(self.chunks.popleft()[1])
            self.cond.notify_all()

    def abort(self) -> None:
        with self.cond:
            self.aborted = True
            self.cond.notify_all()


class _Connection:
    def __init__(self, client: socket.socket, server: socket.socket, ready_at: float, limit: int) -> None:
        self.sockets = (client, server)
        self.ready_at = ready_at
        self.last_to_server: bool | None = None  # direction of the latest bytes
        self.pipes = (_Pipe(client, server, True, limit), _Pipe(server, client, False, limit))
        self.running = 4  # a reader and a writer per pipe

    def abort(self) -> None:
        for pipe in self.pipes:
            pipe.abort()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv or sendall
            except OSError:
                pass


class ShapingProxy:
    """Listens on 127.0.0.1 (a free port, ``.port``) and forwards to ``target_host:target_port``.

    ``profile`` (a :class:`Profile` or a name in :data:`PROFILES`) may be
    replaced while running; it applies to chunks arriving afterwards.
    """

    def __init__(self, target_port: int, profile: Profile | str = "LAN 1 ms", *,
                 target_host: str = "127.0.0.1", max_connections: int = 16, lifetime: float = 15 * 60,
                 max_buffer: int = 1 << 20) -> None:
        if not ipaddress.ip_address(target_host).is_loopback:
            raise ValueError(f"the proxy forwards to loopback addresses only, not {target_host}")
        self.target = (target_host, target_port)
        self.profile = PROFILES[profile] if isinstance(profile, str) else profile
        self.max_connections, self.lifetime, self.max_buffer = max_connections, lifetime, max_buffer
        self.port: int | None = None
        self._lock = threading.Lock()
        self._counters = Counters()
        self._link_free_at = {True: 0.0, False: 0.0}  # by direction (to_server)
        self._connections: set[_Connection] = set()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------

    def start(self) -> Self:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # how often the acceptor looks at the clock
        self.port = self._listener.getsockname()[1]
        self._deadline = time.monotonic() + self.lifetime
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"proxy:{self.port}", daemon=True)
        self._acceptor.start()
        return self

    def stop(self, timeout: float = 5) -> None:
        self._stopping.set()
        if self._acceptor is None:
            return
        if self._acceptor is not None and self._acceptor is not threading.current_thread():
            self._acceptor.join(timeout)
        self._stopped.wait(timeout)

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- counters --------------------------------------------------------

    def counters(self) -> Counters:
        with self._lock:
            return self._counters

    def reset(self) -> Counters:
        """Zero the counters; returns their values before."""
        with self._lock:
            before, self._counters = self._counters, Counters()
            return before

    # -- inside ----------------------------------------------------------

    def _accept_loop(self) -> None:
        try:
            while not self._stopping.is_set() and time.monotonic() < self._deadline:
                try:
                    client, _ = self._listener.accept()
                except TimeoutError:
                    continue
                self._admit(client)
        finally:
            self._listener.close()
            with self._lock:
                connections = list(self._connections)
            for conn in connections:
                conn.abort()
            deadline = time.monotonic() + 5
            while self._connections and time.monotonic() < deadline:
                time.sleep(0.01)
            self._stopped.set()

    def _admit(self, client: socket.socket) -> None:
        with self._lock:
            full = len(self._connections) >= self.max_connections
            if full:
                self._counters = replace(self._counters, refused=self._counters.refused + 1)
        if full:
            client.close()
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        for sock in (client, server):
            sock.settimeout(None)
            # Our own delays are the network's; the kernel's are not wanted.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(client, server, time.monotonic() + self.profile.rtt, self.max_buffer)
        with self._lock:
            self._connections.add(conn)
            self._counters = replace(self._counters, connections=self._counters.connections + 1)
        for pipe in conn.pipes:
            direction = "up" if pipe.to_server else "down"
            for work in (self._read, self._write):
                threading.Thread(target=work, args=(conn, pipe), daemon=True,
                                 name=f"proxy:{self.port}:{direction}:{work.__name__}").start()

    def _read(self, conn: _Connection, pipe: _Pipe) -> None:
        try:
            while True:
                data = pipe.src.recv(CHUNK)
                pipe.put(self._schedule(conn, pipe.to_server, data, time.monotonic()), data)
                if not data:
                    return
        except OSError:
            conn.abort()
        finally:
            self._finished(conn)

    def _write(self, conn: _Connection, pipe: _Pipe) -> None:
        try:
            while (data := pipe.next_due()) is not None:
                if not data:
                    pipe.dst.shutdown(socket.SHUT_WR)  # the sender's FIN, passed on
                    return
                pipe.dst.sendall(data)
                pipe.delivered()
        except OSError:
            conn.abort()
        finally:
            self._finished(conn)

    def _schedule(self, conn: _Connection, to_server: bool, data: bytes, arrival: float) -> float:
        """When ``data`` reaching the proxy at ``arrival`` is handed over; counts it."""
        profile = self.profile
        with self._lock:
            start = max(arrival, self._link_free_at[to_server], conn.ready_at)
            done = start + len(data) * 8 / profile.bandwidth
            self._link_free_at[to_server] = done
            if data:
                c = self._counters
                if to_server:
                    trip = conn.last_to_server is not True
                    self._counters = replace(c, bytes_to_server=c.bytes_to_server + len(data),
                                             round_trips=c.round_trips + trip)
                else:
                    self._counters = replace(c, bytes_to_client=c.bytes_to_client + len(data))
                conn.last_to_server = to_server
            return done + profile.rtt / 2

    def _finished(self, conn: _Connection) -> None:
        with self._lock:
            conn.running -= 1
            last = conn.running == 0
            if last:
                self._connections.discard(conn)
        if last:
            for sock in conn.sockets:
                sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--profile", choices=list(PROFILES), default="WAN 30 ms")
    parser.add_argument("--lifetime", type=float, default=15 * 60, help="seconds before it stops by itself")
    parser.add_argument("--max-connections", type=int, default=16)
    args = parser.parse_args()
    proxy = ShapingProxy(args.target_port, args.profile, lifetime=args.lifetime,
                         max_connections=args.max_connections).start()
    print(f"{args.profile}: 127.0.0.1:{proxy.port} -> 127.0.0.1:{args.target_port}", flush=True)
    try:
        while not proxy.stopped:
            time.sleep(0.2)
    except KeyboardInterrupt:
        proxy.stop()
    print(proxy.counters())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
