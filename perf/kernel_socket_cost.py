#!/usr/bin/env python3
"""The kernel's own memory per loopback TCP connection, with no broker involved.

Opens N TCP connections to a listener in this same process (so 2N sockets: the connecting end and the
accepted end), sends a few bytes each way on each (as CONNECT/CONNACK would), reads them, and reports the
growth of kernel slab memory (/proc/slabinfo, active objects x object size, per cache) and of TCP buffer
memory (/proc/net/sockstat "mem", pages) per socket. A broker host holding real devices has one socket per
connection, so "per socket" is the kernel cost to set beside the broker's own memory.

Usage: perf/kernel_socket_cost.py [--pairs 9000] [--rounds 3] [--json FILE]
The other processes on the machine keep allocating too, so the slab total carries their noise; the per-cache
lines show which caches grew by about one object per socket (TCP, sock_inode_cache, dentry, filp, ...).
"""

import argparse
import json
import socket
import sys
import time

PAGE_BYTES = 4096


def slab_bytes() -> dict:
    caches = {}
    with open("/proc/slabinfo") as slabinfo:
        for line in slabinfo:
            if line.startswith(("slabinfo", "#")):
                continue
            fields = line.split()
            caches[fields[0]] = int(fields[1]) * int(fields[3])
    return caches


def tcp_mem_pages() -> int:
    with open("/proc/net/sockstat") as sockstat:
        for line in sockstat:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1])
    return 0


def snapshot() -> dict:
    return {"slab": slab_bytes(), "tcp_mem_pages": tcp_mem_pages(), "at": time.time()}


def open_pairs(pairs: int) -> list:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    held = [listener]
    for index in range(pairs):
        # Spread over source addresses so no one address runs out of ports.
        client = socket.socket()
        client.bind((f"127.0.0.{2 + index % 8}", 0))
        client.connect(("127.0.0.1", port))
        server, _ = listener.accept()
        client.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x1e\x00\x00")
        server.recv(64)
        server.sendall(b"\x20\x02\x00\x00")
        client.recv(64)
        held += [client, server]
    return held


SOCKET_CACHES = ("TCP", "sock_inode_cache", "dentry", "filp", "lsm_inode_cache", "lsm_file_cache")


def measure_round(pairs: int) -> dict:
    """One round: open, hold, close. Growth per cache in bytes, TCP buffer bytes, what closing gave back."""
    before = snapshot()
    held = open_pairs(pairs)
    time.sleep(1)
    during = snapshot()
    for sock in held:
        sock.close()
    time.sleep(2)
    after = snapshot()
    growth = {name: during["slab"].get(name, 0) - before["slab"].get(name, 0) for name in during["slab"]}
    return {
        "growth": growth,
        "tcp_mem_bytes": (during["tcp_mem_pages"] - before["tcp_mem_pages"]) * PAGE_BYTES,
        "left_after_close": sum(after["slab"].values()) - sum(before["slab"].values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=9000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    sockets = 2 * args.pairs
    rounds = [measure_round(args.pairs) for _ in range(args.rounds)]
    # The median round by total growth: other processes' allocations push single rounds up or down.
    rounds.sort(key=lambda r: sum(r["growth"].values()))
    median = rounds[len(rounds) // 2]
    growth = median["growth"]
    slab_total = sum(growth.values())
    socket_caches = sum(growth.get(name, 0) for name in SOCKET_CACHES)
    top = sorted(growth.items(), key=lambda item: -item[1])[:10]
    result = {
        "pairs": args.pairs,
        "sockets": sockets,
        "rounds": args.rounds,
        "slab_bytes_per_socket": slab_total / sockets,
        "socket_cache_bytes_per_socket": socket_caches / sockets,
        "tcp_buffer_bytes_per_socket": median["tcp_mem_bytes"] / sockets,
        "top_caches_bytes_per_socket": {name: bytes_ / sockets for name, bytes_ in top},
        "slab_rounds_bytes_per_socket": [sum(r["growth"].values()) / sockets for r in rounds],
    }
    print(f"kernel cost of {args.pairs} loopback TCP connections ({sockets} sockets), median of {args.rounds} rounds:")
    print(f"  socket caches ({', '.join(SOCKET_CACHES)}): {socket_caches / sockets:.0f} B per socket")
    print(f"  all slab growth: {slab_total / sockets:.0f} B per socket (rounds: "
          + ", ".join(f"{value:.0f}" for value in result["slab_rounds_bytes_per_socket"]) + "; other processes add noise)")
    print(f"  TCP buffer memory (sockstat mem): {median['tcp_mem_bytes'] / sockets:.0f} B per socket")
    for name, bytes_ in top:
        print(f"    {name:28} {bytes_ / sockets:8.0f} B per socket")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
