#!/usr/bin/env python3
"""Start-up time and memory with many small persistent sessions in the data directory.

For each COUNT: `examples/persist_sessions` writes COUNT sessions (one QoS 1 subscription each, offline)
straight into a fresh data directory through the broker's own log code; then shardmq is started on it
and we measure, from spawn:
  - ready: the first CONNECT that gets a CONNACK with session present = 1 for a restored session (the
    port is bound before the shards restore, so a bare TCP connect would not prove anything);
  - restored: the last shard's `persistence: state restored` log line (with its session count);
  - RSS of the broker once ready (VmRSS, and VmHWM, the peak during the replay);
  - the data directory's size.
It also checks that the restored count is COUNT. Bounded: each start waits at most START_TIMEOUT_SECS.

    perf/restore_time.py [COUNT ...]          # default 100000 1000000
    SHARDS=2 SHARDMQ_BIN=... GEN_BIN=... perf/restore_time.py 100000

GEN_BIN / SHARDMQ_BIN default to $CARGO_TARGET_DIR/debug/{examples/persist_sessions,shardmq} (build with
`cargo build --bin shardmq --example persist_sessions`; add --release and set them for release figures).
The data goes in a temporary directory under TMPDIR, removed afterwards.
"""

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

TARGET = os.environ.get("CARGO_TARGET_DIR", "target")
SHARDMQ = os.environ.get("SHARDMQ_BIN", f"{TARGET}/debug/shardmq")
GEN = os.environ.get("GEN_BIN", f"{TARGET}/debug/examples/persist_sessions")
SHARDS = int(os.environ.get("SHARDS", "2"))
START_TIMEOUT_SECS = 300


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def connect_packet(client_id):
    """MQTT 3.1.1 CONNECT, clean session 0, keep-alive 60."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x00\x00\x3c" + struct.pack(">H", len(cid)) + cid
    return bytes([0x10, len(body)]) + body


def session_present(port, client_id):
    """True/False from the CONNACK, None if the broker does not answer yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.settimeout(START_TIMEOUT_SECS)
            sock.sendall(connect_packet(client_id))
            connack = sock.recv(4)
            if len(connack) == 4 and connack[0] == 0x20 and connack[3] == 0:
                return connack[2] & 1 == 1
    except OSError:
        pass
    return None


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def du_bytes(path):
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def run(count):
    work = tempfile.mkdtemp(prefix="shardmq-restore-")
    try:
        data = os.path.join(work, "data")
        started = time.monotonic()
        subprocess.run([GEN, data, str(SHARDS), str(count)], check=True, stdout=subprocess.DEVNULL)
        generated_secs = time.monotonic() - started
        config = os.path.join(work, "shardmq.toml")
        with open(config, "w") as out:
            out.write(f'[persistence]\ndir = "{data}"\ndurability = "periodic"\n')
        log_path = os.path.join(work, "broker.log")
        port = free_port()
        with open(log_path, "w") as log:
            spawned = time.monotonic()
            broker = subprocess.Popen([SHARDMQ, "--listen", f"127.0.0.1:{port}", "--shards", str(SHARDS),
                                       "--config", config], stdout=log, stderr=subprocess.STDOUT,
                                      env={**os.environ, "NO_COLOR": "1"})
        try:
            present = None
            while present is None and time.monotonic() - spawned < START_TIMEOUT_SECS:
                present = session_present(port, "restore-0")
                if present is None:
                    time.sleep(0.02)
            ready_secs = time.monotonic() - spawned
            rss, hwm = status_kib(broker.pid, "VmRSS"), status_kib(broker.pid, "VmHWM")
            with open(log_path) as log:
                text = log.read()
            restored = [int(n) for n in re.findall(r"sessions=(\d+) expired_sessions", text)]
            if present is not True or sum(restored) != count:
                raise RuntimeError(f"restore of {count} failed: present={present} restored={restored}\n{text}")
        finally:
            broker.terminate()
            broker.wait(60)
        return {
            "sessions": count, "shards": SHARDS, "generate_s": round(generated_secs, 2),
            "ready_s": round(ready_secs, 2), "rss_mib": round(rss / 1024, 1), "peak_rss_mib": round(hwm / 1024, 1),
            "rss_per_session_b": round(rss * 1024 / count), "data_mib": round(du_bytes(data) / 2**20, 1),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    counts = [int(arg) for arg in sys.argv[1:]] or [100_000, 1_000_000]
    with open("/proc/loadavg") as load:
        print(f"# shardmq {SHARDMQ}, {SHARDS} shards, load average {' '.join(load.read().split()[:3])}")
    for count in counts:
        print(run(count), flush=True)


if __name__ == "__main__":
    main()
