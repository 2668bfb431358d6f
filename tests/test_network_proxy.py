"""The shaping proxy over real sockets: exact counts, and delays no shorter than its profile's.

Times are checked as lower bounds only: the proxy must not be faster than the
network it models; how much slower a loaded machine makes it is not its fault.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from scripts.benchmarks.network_proxy import PROFILES, Profile, ShapingProxy
from tests.support.database import PROJECT_ROOT
from tests.support.waiting import wait_until

HEADER = struct.Struct("!II")  # request body length, reply length
WAN = PROFILES["WAN 30 ms"]


def recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 16))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _answer(conn: socket.socket) -> None:
    """Reads a header and its body, then answers with as many bytes as the header asked for."""
    with conn:
        try:
            while True:
                body, reply = HEADER.unpack(recv_exact(conn, HEADER.size))
                recv_exact(conn, body)
                conn.sendall(b"r" * reply)
        except (EOFError, OSError):
            pass


@contextmanager
def server():
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            threading.Thread(target=_answer, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


@contextmanager
def proxied(profile, **options):
    with server() as port, ShapingProxy(port, profile, **options) as proxy:
        yield proxy


def connect(proxy: ShapingProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def ask(sock: socket.socket, body: int, reply: int) -> None:
    sock.sendall(HEADER.pack(body, reply) + b"q" * body)
    assert recv_exact(sock, reply) == b"r" * reply


def test_bytes_are_counted_exactly_in_both_directions():
    requests = [(0, 1), (1, 0), (100, 70_000), (250_000, 3), (12_345, 54_321)]
    with proxied("LAN 1 ms") as proxy, connect(proxy) as sock:
        for body, reply in requests:
            ask(sock, body, reply)
        counted = proxy.counters()
    assert counted.bytes_to_server == sum(HEADER.size + body for body, _ in requests)
    assert counted.bytes_to_client == sum(reply for _, reply in requests)
    assert counted.connections == 1 and counted.refused == 0


def test_round_trips_are_counted_exactly_for_a_scripted_exchange():
    with proxied(WAN) as proxy:
        with connect(proxy) as sock:
            ask(sock, 10, 10)  # 1: the connection's first request
            header = HEADER.pack(5, 7)
            # 2: one request in three writes, the server waiting for all of it; each write
            # reaches the proxy on its own before the next is sent.
            sent = HEADER.size + 10
            for piece in (header[:3], header[3:], b"q" * 5):
                sock.sendall(piece)
                sent += len(piece)
                wait_until(lambda sent=sent: proxy.counters().bytes_to_server == sent, "the proxy to receive the write")
            recv_exact(sock, 7)
            sock.sendall(HEADER.pack(1, 2) + b"q" + HEADER.pack(0, 3))  # 3: two pipelined requests
            recv_exact(sock, 5)
            ask(sock, 0, 1)  # 4
        with connect(proxy) as other:
            ask(other, 0, 1)  # 5: another connection's first
        assert proxy.counters().round_trips == 5
        assert proxy.reset().round_trips == 5
        assert proxy.counters().round_trips == 0


def test_a_ping_pong_takes_at_least_the_round_trip_time():
    with proxied(WAN) as proxy, connect(proxy) as sock:
        started = time.perf_counter()
        ask(sock, 0, 1)
        first = time.perf_counter() - started
        pings = []
        for _ in range(5):
            started = time.perf_counter()
            ask(sock, 0, 1)
            pings.append(time.perf_counter() - started)
    assert first >= 2 * WAN.rtt  # the TCP handshake, then the exchange
    assert min(pings) >= WAN.rtt, pings


def test_bandwidth_limits_a_transfer_each_way():
    slow = Profile("10 Mbit/s", 0.002, 10e6)
    with proxied(slow) as proxy, connect(proxy) as sock:
        ask(sock, 0, 1)
        started = time.perf_counter()
        ask(sock, 500_000, 1)
        up = time.perf_counter() - started
        started = time.perf_counter()
        ask(sock, 0, 500_000)
        down = time.perf_counter() - started
    assert up >= 0.4 + slow.rtt and down >= 0.4 + slow.rtt, (up, down)


def test_connections_past_the_maximum_are_refused():
    with proxied(WAN, max_connections=2) as proxy, connect(proxy) as a, connect(proxy) as b:
        ask(a, 0, 1)
        ask(b, 0, 1)
        with connect(proxy) as c:
            assert c.recv(1) == b""  # closed at once
        ask(a, 0, 1)
        assert proxy.counters().refused == 1 and proxy.counters().connections == 2


def test_the_proxy_stops_by_itself_after_its_lifetime():
    with proxied(WAN, lifetime=0.5) as proxy:
        sock = connect(proxy)
        ask(sock, 0, 1)
        wait_until(lambda: proxy.stopped, "the proxy to stop after its lifetime")
        try:
            assert sock.recv(1) == b""  # the open connection was ended too
        except ConnectionResetError:
            pass
        sock.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2)


def test_the_proxy_forwards_to_loopback_only():
    with pytest.raises(ValueError):
        ShapingProxy(80, target_host="192.0.2.1")


def test_quick_network_benchmark_writes_its_report(tmp_path):
    result = subprocess.run(
        [sys.executable, "scripts/benchmarks/network.py", "--quick", "--profiles", "LAN 1 ms", "--turns", "2",
         "--out", str(tmp_path)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| postgres | off | LAN 1 ms | 2 |" in (tmp_path / "network_report.md").read_text()
    cells = json.loads((tmp_path / "network_results.json").read_text())["results"]
    assert {c["backend"] for c in cells} == {"postgres", "supabase"}
    for cell in cells:
        # Five calls (get; get + setex; get + setex), one round trip each.
        assert cell["round_trips_each"] == [5] * cell["exchanges"], cell
        assert cell["bytes_sent"] > cell["thread_bytes"] and cell["bytes_received"] > 2 * cell["thread_bytes"]
    assert (tmp_path / "network_chart.png").stat().st_size > 5_000
