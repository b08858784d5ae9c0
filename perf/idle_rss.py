#!/usr/bin/env python3
"""Broker memory per idle MQTT connection: shardmq beside Mosquitto, measured in the same run.

For each broker: start it on a free loopback port, read its RSS, then open idle connections in steps
(default 1000, 5000, 15000 in total; each sends CONNECT with a 300 s keep-alive and waits for CONNACK,
from source addresses 127.0.0.2.. so no address runs out of ports), and after each step report
RSS growth per connection (since the start, and since the previous step: the marginal cost, without the
one-time growth of allocator segments and tables) and the kernel's TCP memory (/proc/net/sockstat, pages)
per connection.

Usage: perf/idle_rss.py [--shardmq target/release/shardmq] [--shards 1,2] [--steps 5000,15000]
                        [--no-mosquitto] [--smaps]
Prints a Markdown table. With --smaps, also where the growth went, by mapping (/proc/PID/smaps): the
anonymous mappings grouped by size (mimalloc's arenas are the large ones), the thread stacks and the rest.
Environment variables (e.g. MIMALLOC_SHOW_STATS=1, MIMALLOC_PURGE_DELAY=0) reach the broker unchanged.
The client holds every socket in this one process, so the largest step must stay under this process's
open-file limit (20,000 here).
"""

import argparse
import os
import re
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import time

KEEPALIVE_SECS = 300
SOURCE_ADDRESSES = [f"127.0.0.{n}" for n in range(2, 10)]
BATCH = 500


def connect_packet(client_id: str) -> bytes:
    """MQTT 3.1.1 CONNECT, clean session, no will/credentials."""
    cid = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02" + struct.pack(">H", KEEPALIVE_SECS)
    payload = struct.pack(">H", len(cid)) + cid
    body = variable + payload
    return b"\x10" + encode_remaining_length(len(body)) + body


def encode_remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def smaps(pid: int) -> dict:
    """Rss (KiB) of each mapping, keyed by (start address, description)."""
    mappings, key = {}, None
    with open(f"/proc/{pid}/smaps") as text:
        for line in text:
            fields = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                start, end = (int(part, 16) for part in fields[0].split("-"))
                key = (start, end - start, fields[5] if len(fields) > 5 else "[anon]")
            elif fields[0] == "Rss:" and key is not None:
                mappings[key] = int(fields[1])
    return mappings


def mapping_kind(key) -> str:
    _, size, name = key
    if name != "[anon]":
        return name if name.startswith("[") else "file-backed (binary, libraries)"
    if size >= 32 << 20:
        return "anon >= 32 MiB (mimalloc arenas)"
    if size >= 1 << 20:
        return "anon 1-32 MiB (large allocations, thread stacks)"
    return "anon < 1 MiB"


def smaps_growth(before: dict, after: dict) -> dict:
    growth = {}
    for key in set(before) | set(after):
        delta = after.get(key, 0) - before.get(key, 0)
        if delta:
            growth[mapping_kind(key)] = growth.get(mapping_kind(key), 0) + delta
    return growth


def tcp_mem_pages() -> int:
    with open("/proc/net/sockstat") as sockstat:
        for line in sockstat:
            if line.startswith("TCP:"):
                return int(re.search(r"mem (\d+)", line).group(1))
    return 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"broker not listening on {port}")


def open_idle(port: int, first: int, count: int, prefix: str, sockets: list) -> None:
    """Opens `count` connections, each CONNECTed (CONNACK received), appended to `sockets`."""
    selector = selectors.DefaultSelector()
    for start in range(first, first + count, BATCH):
        pending = {}
        for i in range(start, min(start + BATCH, first + count)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((SOURCE_ADDRESSES[i % len(SOURCE_ADDRESSES)], 0))
            sock.connect(("127.0.0.1", port))
            sock.sendall(connect_packet(f"{prefix}-{i}"))
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            pending[sock] = b""
            sockets.append(sock)
        deadline = time.time() + 30
        while pending:
            if time.time() > deadline:
                raise RuntimeError(f"{len(pending)} connections got no CONNACK")
            for key, _ in selector.select(timeout=1):
                sock = key.fileobj
                data = pending[sock] + sock.recv(16)
                if len(data) >= 4:
                    if data[0] != 0x20 or data[3] != 0:
                        raise RuntimeError(f"refused: {data!r}")
                    selector.unregister(sock)
                    del pending[sock]
                else:
                    pending[sock] = data
    selector.close()


def measure(name: str, command: list, port: int, steps: list, show_smaps: bool) -> list:
    broker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=None if os.environ.get("MIMALLOC_SHOW_STATS") else subprocess.DEVNULL)
    rows = []
    sockets = []
    try:
        wait_port(port)
        time.sleep(0.5)
        base_rss, base_tcp, base_maps = rss_kib(broker.pid), tcp_mem_pages(), smaps(broker.pid)
        opened, previous_rss = 0, base_rss
        for total in steps:
            open_idle(port, opened, total - opened, name.split()[0], sockets)
            time.sleep(2.0)  # quiet: shardmq trims a shard's scratch memory within a second of going idle
            rss, tcp = rss_kib(broker.pid), tcp_mem_pages()
            marginal = (rss - previous_rss) * 1024 / (total - opened)
            rows.append((name, total, base_rss, rss, (rss - base_rss) * 1024 / total, marginal, (tcp - base_tcp) * 4096 / total))
            opened, previous_rss = total, rss
            print(f"{name}: {total} idle connections, RSS {base_rss} -> {rss} KiB", file=sys.stderr)
            if show_smaps:
                for kind, kib in sorted(smaps_growth(base_maps, smaps(broker.pid)).items(), key=lambda kv: -kv[1]):
                    print(f"    {kind}: {kib:+} KiB = {kib * 1024 / total:+.0f} B per connection", file=sys.stderr)
    finally:
        for sock in sockets:
            sock.close()
        broker.send_signal(2)  # SIGINT: a clean stop, so MIMALLOC_SHOW_STATS prints
        try:
            broker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            broker.kill()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shardmq", default="target/release/shardmq")
    parser.add_argument("--shards", default="1,2", help="shard counts to run, comma separated")
    parser.add_argument("--steps", default="5000,15000")
    parser.add_argument("--no-mosquitto", action="store_true")
    parser.add_argument("--smaps", action="store_true", help="print the growth per kind of mapping")
    args = parser.parse_args()
    steps = [int(step) for step in args.steps.split(",")]

    rows = []
    for shards in args.shards.split(","):
        port = free_port()
        command = [args.shardmq, "--listen", f"127.0.0.1:{port}", "--shards", shards]
        rows += measure(f"shardmq --shards {shards}", command, port, steps, args.smaps)
    if not args.no_mosquitto:
        port = free_port()
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as conf:
            conf.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                       "max_connections -1\nlog_type none\n")
        rows += measure("mosquitto", ["mosquitto", "-c", conf.name], port, steps, args.smaps)
        os.unlink(conf.name)

    print("| broker | idle connections | RSS before (KiB) | RSS after (KiB) | broker bytes / connection | marginal bytes / connection (since previous step) | kernel TCP bytes / connection |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, total, before, after, per_conn, marginal, kernel in rows:
        print(f"| {name} | {total} | {before} | {after} | {per_conn:.0f} | {marginal:.0f} | {kernel:.0f} |")


if __name__ == "__main__":
    main()
