#!/usr/bin/env python3
"""Where a paho client's late message waited: in the broker or in the client (issue 18's stalls).

Runs the shape of tests/python/test_latency.py (10 paho 3.1.1 publisher/subscriber pairs, 500 msg/s in all,
RUNS runs of 5.5 s on fresh clients) against one broker pinned to CPU 0 while tcpdump captures the port on
loopback; this process and its paho threads run on CPU 1. Both run under SCHED_FIFO (needs root). Each
payload carries its sequence number, so the capture gives, per message, when it reached the broker and
when the broker sent it on; the client gives when it was published and read.

usage: perf/paho_latency_capture.py RUNS QOS BROKER   (BROKER: a shardmq binary, or `mosquitto`)
Prints the broker's own leg (capture in -> out: p50, p99, p99.9, max) and the eight latest messages with
each leg. Needs tcpdump (apt-get install tcpdump). About 7 s per run.
"""
import os
import struct
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt

PORT, PAIRS, RATE, PER_RUN = 18931, 10, 500, 2750
CAPTURE = "/tmp/paho_latency_capture.pcap"
MARK = b"x" * 40  # the payload padding, found in the captured TCP payloads


def start_broker(broker):
    pin = ["chrt", "-f", "10", "taskset", "-c", "0"]
    if broker == "mosquitto":
        return subprocess.Popen(pin + ["mosquitto", "-p", str(PORT)], stderr=subprocess.DEVNULL)
    return subprocess.Popen(pin + [broker, "--shards", "1", "--listen", f"127.0.0.1:{PORT}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})


def run_pairs(run, qos, first_sequence, received, lock):
    def on_message(_client, _userdata, message):
        read = time.monotonic()
        sequence, sent = struct.unpack("<Qd", message.payload[:16])
        with lock:
            received[sequence] = (sent, read)

    clients, publishers = [], []
    for pair in range(PAIRS):
        subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"cap-s-{run}-{pair}")
        subscriber.on_message = on_message
        subscriber.connect("127.0.0.1", PORT)
        subscriber.loop_start()
        subscriber.subscribe(f"cap/{run}/{pair}", qos=qos)
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"cap-p-{run}-{pair}")
        publisher.connect("127.0.0.1", PORT)
        publisher.loop_start()
        clients += [subscriber, publisher]
        publishers.append(publisher)
    time.sleep(0.5)
    start = time.monotonic()
    for k in range(PER_RUN):
        due = start + k / RATE
        while time.monotonic() < due:
            time.sleep(0.0002)
        payload = struct.pack("<Qd", first_sequence + k, time.monotonic()) + b"x" * 48
        publishers[k % PAIRS].publish(f"cap/{run}/{k % PAIRS}", payload, qos=qos)
    time.sleep(1)
    for client in clients:
        client.disconnect()
        client.loop_stop()


def captured_times(path):
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
            (arrived if dport == PORT else left).setdefault(sequence, secs + micros / 1e6)
            at = payload.find(MARK, at + 48)
    return arrived, left


def main():
    runs, qos, broker_name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    broker = start_broker(broker_name)
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-s", "200", "-B", "65536", "-w", CAPTURE, f"tcp port {PORT}"],
                            stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    os.sched_setaffinity(0, {1})
    wall_minus_monotonic = time.time() - time.monotonic()
    received, lock = {}, threading.Lock()
    for run in range(runs):
        run_pairs(run, qos, run * PER_RUN, received, lock)
    time.sleep(0.5)
    dump.terminate()
    dump.wait()
    broker.terminate()
    broker.wait()
    arrived, left = captured_times(CAPTURE)
    legs = sorted(left[k] - arrived[k] for k in received if k in arrived and k in left)
    q = lambda values, f: values[min(len(values) - 1, int(f * len(values)))] * 1000
    print(f"{broker_name} QoS {qos}: read {len(received)} of {runs * PER_RUN}")
    print(f"broker leg (capture in -> out) over {len(legs)} messages: p50 {q(legs, .5):.3f} p99 {q(legs, .99):.3f} "
          f"p99.9 {q(legs, .999):.3f} max {legs[-1] * 1000:.2f} ms")
    latencies = sorted((read - sent, k) for k, (sent, read) in received.items())
    print(f"publish -> read: p50 {q([l for l, _ in latencies], .5):.2f} p99 {q([l for l, _ in latencies], .99):.2f} "
          f"max {latencies[-1][0] * 1000:.1f} ms; the latest, in ms after the publish call:")
    since = lambda at, sent: f"{(at - wall_minus_monotonic - sent) * 1000:7.2f}" if at else "   none"
    for latency, k in latencies[::-1][:8]:
        sent, read = received[k]
        print(f"  seq {k}: at the broker {since(arrived.get(k), sent)}, left it {since(left.get(k), sent)}, "
              f"read by the client {(read - sent) * 1000:7.2f}")


if __name__ == "__main__":
    main()
