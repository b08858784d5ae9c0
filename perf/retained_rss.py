#!/usr/bin/env python3
"""Broker memory per retained message, and how much comes back when they are deleted: shardmq beside
Mosquitto, in the same run, with a real client (paho-mqtt).

For each broker: start it on a free loopback port, read its RSS, publish COUNT retained messages of SIZE
bytes (QoS 1, topics `retained/{i}`, one client), wait until RSS stops moving, read RSS, check that a
sample of topics answers a new subscriber with its retained message, then delete them all (retained
publishes with an empty payload), wait, read RSS again and check that `retained/#` answers nothing.
Reports RSS per stored message and the share of the growth returned after the deletes.

Usage: perf/retained_rss.py [--shardmq target/release/shardmq] [--shards 1,2] [--count 100000]
                            [--size 1024] [--no-mosquitto] [--smaps]
Environment variables (MIMALLOC_SHOW_STATS=1, ...) reach the broker unchanged.
"""

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt

INFLIGHT = 200


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settled_rss_kib(pid: int, quiet_secs: float = 2.0, timeout_secs: float = 30.0) -> int:
    """RSS once it has not moved by more than 64 KiB for `quiet_secs` (purges and mesh replicas done)."""
    deadline = time.time() + timeout_secs
    last, since = rss_kib(pid), time.time()
    while time.time() < deadline:
        time.sleep(0.25)
        now = rss_kib(pid)
        if abs(now - last) > 64:
            last, since = now, time.time()
        elif time.time() - since >= quiet_secs:
            return now
    return rss_kib(pid)


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


def client(port: int, client_id: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    c.max_inflight_messages_set(INFLIGHT)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port, keepalive=300)
    c.loop_start()
    return c


def publish_all(port: int, count: int, payload_of) -> None:
    """Publishes `retained/{i}` for every i with payload_of(i), QoS 1, and waits for every PUBACK."""
    publisher = client(port, "retained-publisher")
    window = threading.Semaphore(INFLIGHT)
    publisher.on_publish = lambda *_: window.release()
    infos = []
    for i in range(count):
        window.acquire()
        infos.append(publisher.publish(f"retained/{i}", payload_of(i), qos=1, retain=True))
    for info in infos:
        info.wait_for_publish(timeout=30)
    publisher.disconnect()
    publisher.loop_stop()


def retained_answers(port: int, filters: list, settle_secs: float = 1.5) -> dict:
    """topic -> payload of what a new subscriber to `filters` gets within `settle_secs` of its SUBACK."""
    got = {}
    subscriber = client(port, f"retained-check-{random.randrange(1 << 30)}")
    subscriber.on_message = lambda _c, _u, message: got.__setitem__(message.topic, message.payload)
    subscriber.subscribe([(f, 0) for f in filters])
    time.sleep(settle_secs)
    subscriber.disconnect()
    subscriber.loop_stop()
    return got


def measure(name: str, command: list, port: int, count: int, size: int) -> dict:
    broker = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                              stderr=None if os.environ.get("MIMALLOC_SHOW_STATS") else subprocess.DEVNULL)
    try:
        wait_port(port)
        base = settled_rss_kib(broker.pid, quiet_secs=1.0)
        payload_of = lambda i: (b"%08d" % i) * (size // 8) + b"x" * (size % 8)
        started = time.time()
        publish_all(port, count, payload_of)
        publish_secs = time.time() - started
        full = settled_rss_kib(broker.pid)
        sample = random.sample(range(count), 50)
        answers = retained_answers(port, [f"retained/{i}" for i in sample])
        wrong = [i for i in sample if answers.get(f"retained/{i}") != payload_of(i)]
        if wrong:
            raise RuntimeError(f"{name}: {len(wrong)} of 50 sampled retained topics answered wrongly")
        publish_all(port, count, lambda _i: b"")
        deleted = settled_rss_kib(broker.pid, quiet_secs=3.0)
        left = retained_answers(port, ["retained/#"])
        if left:
            raise RuntimeError(f"{name}: {len(left)} retained messages left after deleting them all")
        row = {
            "name": name, "base": base, "full": full, "deleted": deleted, "publish_secs": publish_secs,
            "per_message": (full - base) * 1024 / count,
            "returned": (full - deleted) / (full - base) if full > base else 0.0,
        }
        print(f"{name}: RSS {base} -> {full} -> {deleted} KiB", file=sys.stderr)
        return row
    finally:
        broker.send_signal(2)  # SIGINT: a clean stop, so MIMALLOC_SHOW_STATS prints
        try:
            broker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            broker.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shardmq", default="target/release/shardmq")
    parser.add_argument("--shards", default="1,2", help="shard counts to run, comma separated")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--no-mosquitto", action="store_true")
    args = parser.parse_args()

    rows = []
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as config:
        config.write(f"[mqtt]\nretained_messages_max = {max(args.count * 2, 1_000_000)}\n")
    for shards in args.shards.split(","):
        port = free_port()
        command = [args.shardmq, "--config", config.name, "--listen", f"127.0.0.1:{port}", "--shards", shards]
        rows.append(measure(f"shardmq --shards {shards}", command, port, args.count, args.size))
    os.unlink(config.name)
    if not args.no_mosquitto:
        port = free_port()
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as conf:
            conf.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_type none\n"
                       "max_inflight_messages 0\nmax_queued_messages 0\n")
        rows.append(measure("mosquitto", ["mosquitto", "-c", conf.name], port, args.count, args.size))
        os.unlink(conf.name)

    print(f"| broker | {args.count} retained x {args.size} B: RSS before -> stored -> all deleted (KiB) "
          "| RSS per message | returned after the deletes | publish time |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['name']} | {row['base']} -> {row['full']} -> {row['deleted']} | {row['per_message']:.0f} B "
              f"| {row['returned'] * 100:.0f}% | {row['publish_secs']:.1f} s |")


if __name__ == "__main__":
    main()
