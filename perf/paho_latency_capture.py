#!/usr/bin/env python3
"""Where a paho client's late message waited: in the broker or in the client (issue 18's stalls).

Runs tests/python/test_latency.py's own shape (its `run_pairs` and `Broker`: 10 paho 3.1.1 pairs, 500 msg/s
in all, a 0.5 s untimed warm-up then 5 s, one shard on CPU 0, this process and its paho threads on CPU 1,
both under SCHED_FIFO, so it needs root) RUNS times while tcpdump captures the broker's port on loopback.
Each payload carries its sequence number, so the capture gives, per message, when it reached the broker
and when the broker sent it on; the client gives when it was published and read.

usage: perf/paho_latency_capture.py RUNS QOS   (the broker as for the tests: SHARDMQ_BIN, or
       SHARDMQ_TEST_BROKER=mosquitto)
Prints the broker's own leg (capture in -> out: p50, p99, p99.9, max) and the eight latest timed messages
with each leg. Needs tcpdump (apt-get install tcpdump). About 7 s per run.
"""
import os
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from test_latency import BROKER_CPU, CLIENT_CPU, FIFO_PRIORITY, PAYLOAD_PADDING, run_pairs  # noqa: E402
from test_paho import Broker  # noqa: E402

CAPTURE = "/tmp/paho_latency_capture.pcap"
MARK = PAYLOAD_PADDING[:40]  # found in the captured TCP payloads, right after sequence number and send time


def captured_times(path, port):
    """(arrived at the broker, left the broker) per sequence number, from a pcap of Ethernet frames."""
    data = open(path, "rb").read()
    arrived, left = {}, {}
    pos = 24
    while pos + 16 <= len(data):
        secs, micros, length, _ = struct.unpack("<IIII", data[pos:pos + 16])
        frame = data[pos + 16:pos + 16 + length]
        pos += 16 + length
        ip = frame[14:]
        tcp = ip[(ip[0] & 15) * 4:]
        _, dport = struct.unpack(">HH", tcp[:4])
        payload = tcp[(tcp[12] >> 4) * 4:]
        at = payload.find(MARK)
        while at >= 16:
            sequence = struct.unpack("<Q", payload[at - 16:at - 8])[0]
            (arrived if dport == port else left).setdefault(sequence, secs + micros / 1e6)
            at = payload.find(MARK, at + len(PAYLOAD_PADDING))
    return arrived, left


def main():
    runs, qos = int(sys.argv[1]), int(sys.argv[2])
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(FIFO_PRIORITY))
    broker = Broker(shards=1, cpus={BROKER_CPU}, fifo_priority=FIFO_PRIORITY)
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-s", "200", "-B", "65536", "-w", CAPTURE,
                             f"tcp port {broker.port}"], stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)  # tcpdump attaches
        os.sched_setaffinity(0, {CLIENT_CPU})
        wall_minus_monotonic = time.time() - time.monotonic()
        results = [run_pairs(broker.port, qos, first_sequence=run * 1_000_000) for run in range(runs)]
        time.sleep(0.5)
    finally:
        dump.terminate()
        dump.wait()
        broker.stop()
    arrived, left = captured_times(CAPTURE, broker.port)
    times = {k: v for result in results for k, v in result.times.items()}
    timed = [k for result in results for k in result.times if k >= result.first_timed]
    legs = sorted(left[k] - arrived[k] for k in timed if k in arrived and k in left)
    warmup_legs = sorted(left[k] - arrived[k] for k in set(times) - set(timed) if k in arrived and k in left)
    q = lambda values, f: values[min(len(values) - 1, int(f * len(values)))] * 1000
    print(f"{broker.kind} QoS {qos}: read {len(times)} of {sum(result.sent for result in results)}")
    print(f"broker leg (capture in -> out) over {len(legs)} timed messages: p50 {q(legs, .5):.3f} p99 {q(legs, .99):.3f} "
          f"p99.9 {q(legs, .999):.3f} max {legs[-1] * 1000:.2f} ms")
    print(f"  (the untimed warm-up's {len(warmup_legs)}: p50 {q(warmup_legs, .5):.3f} max {warmup_legs[-1] * 1000:.2f} ms)")
    for result in results:
        print(f"  {result}")
    latest = sorted(timed, key=lambda k: times[k][1] - times[k][0], reverse=True)[:8]
    since = lambda at, sent: f"{(at - wall_minus_monotonic - sent) * 1000:7.2f}" if at else "   none"
    print("the latest timed messages, in ms after the publish call:")
    for k in latest:
        sent, read = times[k]
        print(f"  seq {k}: at the broker {since(arrived.get(k), sent)}, left it {since(left.get(k), sent)}, "
              f"read by the client {(read - sent) * 1000:7.2f}")


if __name__ == "__main__":
    main()
