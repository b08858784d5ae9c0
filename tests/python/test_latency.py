"""Delivery latency seen by plain paho-mqtt clients (issue 18: messages that sat still for up to a second).

The shape of `repro/paho_latency.py`: PAIRS publisher/subscriber pairs of default paho 3.1.1 clients (one
network thread each), RATE messages/s in total paced by the publishing thread, for RUN_SECS, at QoS 0 and
QoS 1; one shard pinned to CPU 0, this process (and so every paho thread it starts) on CPU 1. A lost
wake-up is a race that not every run shows, so the shape runs RUNS times per QoS on one broker; every run
must deliver every message and hold none over STALLED_MS, and the p99 over all runs must stay within
P99_BOUND_MS. Late messages are counted and printed for every run, passed or not, so a failure shows how
often it happened. On a machine busy with other work the p99 bound is at the edge for any broker
(Mosquitto measured 7-14 ms per run at load average 7): run it where the two CPUs are otherwise idle.

The first WARMUP_SECS of each run are sent and must arrive, but their latencies are not counted: the
first messages through 20 fresh paho threads take 10-40 ms with any broker (Mosquitto measured the same
start), which is the client warming up, not the broker. A lost wake-up waits for the shard's 1 s timer
(the bug's messages waited up to 1.02 s, p50 249 ms at QoS 1); STALLED_MS is half of that, above the
paho threads' own rare hiccups: a fresh-clone CI run saw one message at 126 ms, and a packet capture of
this shape (`perf/paho_latency_capture.py`, 16,500 messages) showed every late message leave the broker
within 0.5 ms of arriving and wait in the subscribing paho client for up to 59 ms.

Where the test may (root or CAP_SYS_NICE), the broker and this process run under SCHED_FIFO, as perf/RESULTS.md's
runs on a busy machine do: a compile on the same CPUs otherwise preempts the 20 paho threads for tens of
milliseconds (p99 25 ms at load average 2, Mosquitto or shardmq alike), and what is under test is the
broker's wake-ups, not the scheduler's fairness to other work. Without the privilege they run as usual and
say so.

Knobs (environment): SHARDMQ_LATENCY_RUNS (default 3), SHARDMQ_LATENCY_RUN_SECS (default 5).
"""

import os
import struct
import threading
import time
import unittest

import paho.mqtt.client as mqtt

from test_paho import EVENT_TIMEOUT_SECS, Broker, unique

PAIRS = 10
RATE_PER_SEC = 500
RUNS = int(os.environ.get("SHARDMQ_LATENCY_RUNS", "3"))
RUN_SECS = float(os.environ.get("SHARDMQ_LATENCY_RUN_SECS", "5"))
P99_BOUND_MS = 10.0
LATE_MS = 10.0
STALLED_MS = 500.0
WARMUP_SECS = 0.5
# How long after the last publish a message may still arrive before it counts as not delivered.
DRAIN_SECS = 3.0
BROKER_CPU, CLIENT_CPU = 0, 1
FIFO_PRIORITY = 10
PAYLOAD_PADDING = b"x" * 52


def percentile_ms(sorted_secs, q):
    return sorted_secs[min(len(sorted_secs) - 1, int(q * len(sorted_secs)))] * 1000


class RunResult:
    """What one run saw out of `sent`: `times`, (published, read) per delivered sequence number (monotonic
    seconds), and the sorted latencies of those from `first_timed` on (the warm-up before it is not timed)."""

    def __init__(self, qos, sent, times, first_timed):
        self.qos, self.sent, self.times, self.first_timed = qos, sent, times, first_timed
        self.delivered = len(times)
        self.latencies = sorted(read - published for sequence, (published, read) in times.items()
                                if sequence >= first_timed)
        self.late = sum(1 for latency in self.latencies if latency * 1000 > LATE_MS)
        self.stalled = sum(1 for latency in self.latencies if latency * 1000 > STALLED_MS)

    def p99_ms(self):
        return percentile_ms(self.latencies, 0.99) if self.latencies else float("inf")

    def __str__(self):
        if not self.latencies:
            return f"QoS {self.qos}: sent {self.sent}, got 0"
        p = lambda q: percentile_ms(self.latencies, q)
        return (f"QoS {self.qos}: sent {self.sent} got {self.delivered}; p50 {p(0.5):.2f} p90 {p(0.9):.2f} "
                f"p99 {p(0.99):.2f} max {self.latencies[-1] * 1000:.1f} ms; late (>{LATE_MS:g} ms) {self.late}, "
                f"stalled (>{STALLED_MS:g} ms) {self.stalled}; load average {os.getloadavg()[0]:.2f}")


def connected_client(port, client_id):
    """A paho client with its defaults (3.1.1, its own network thread), as the repro script makes them."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not connected.wait(EVENT_TIMEOUT_SECS):
        raise AssertionError(f"{client_id}: no CONNACK")
    return client


def run_pairs(port, qos, first_sequence=0):
    """One run of the shape, its messages numbered from `first_sequence`; returns its RunResult."""
    times, lock = {}, threading.Lock()

    def on_message(_client, _userdata, message):
        received = time.monotonic()
        sequence, sent = struct.unpack("<Qd", message.payload[:16])
        with lock:
            times.setdefault(sequence, (sent, received))

    clients, publishers = [], []
    subscribed = threading.Semaphore(0)
    topic_base = unique("lat")
    try:
        for pair in range(PAIRS):
            subscriber = connected_client(port, unique("lat-sub"))
            clients.append(subscriber)
            subscriber.on_message = on_message
            subscriber.on_subscribe = lambda *_: subscribed.release()
            subscriber.subscribe(f"{topic_base}/{pair}", qos=qos)
            publisher = connected_client(port, unique("lat-pub"))
            clients.append(publisher)
            publishers.append(publisher)
        for _ in range(PAIRS):
            if not subscribed.acquire(timeout=EVENT_TIMEOUT_SECS):
                raise AssertionError("SUBACK missing")
        warmup = int(RATE_PER_SEC * WARMUP_SECS)
        total = warmup + int(RATE_PER_SEC * RUN_SECS)
        start = time.monotonic()
        for k in range(total):
            due = start + k / RATE_PER_SEC
            while time.monotonic() < due:
                time.sleep(0.0002)
            pair = k % PAIRS
            payload = struct.pack("<Qd", first_sequence + k, time.monotonic()) + PAYLOAD_PADDING
            publishers[pair].publish(f"{topic_base}/{pair}", payload, qos=qos)
        deadline = time.monotonic() + DRAIN_SECS
        while time.monotonic() < deadline:
            with lock:
                if len(times) >= total:
                    break
            time.sleep(0.05)
        with lock:
            return RunResult(qos, total, dict(times), first_sequence + warmup)
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()


class PahoLatencyTest(unittest.TestCase):
    """One shard on CPU 0, the paho clients on CPU 1; needs two CPUs."""

    def setUp(self):
        if len(os.sched_getaffinity(0)) < 2 or not {BROKER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0):
            self.skipTest("needs CPUs 0 and 1")
        self.saved_affinity = os.sched_getaffinity(0)
        self.saved_policy = (os.sched_getscheduler(0), os.sched_getparam(0))
        try:
            # Threads started from here on (paho's network loops) inherit the policy and CPU 1.
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(FIFO_PRIORITY))
            self.fifo = True
        except PermissionError:
            self.fifo = False
            print("\n  paho latency: no permission for SCHED_FIFO, running at normal priority", flush=True)
        self.broker = Broker(shards=1, cpus={BROKER_CPU}, fifo_priority=FIFO_PRIORITY if self.fifo else None)
        os.sched_setaffinity(0, {CLIENT_CPU})

    def tearDown(self):
        os.sched_setaffinity(0, self.saved_affinity)
        os.sched_setscheduler(0, *self.saved_policy)
        self.broker.stop()

    def check_runs(self, qos):
        results = []
        for _ in range(RUNS):
            result = run_pairs(self.broker.port, qos)
            print(f"\n  paho latency ({self.broker.kind}, {PAIRS} pairs, {RATE_PER_SEC}/s, {RUN_SECS:g} s) {result}",
                  flush=True)
            results.append(result)
        report = "\n".join(str(result) for result in results)
        for result in results:
            self.assertEqual(result.delivered, result.sent, f"every message delivered within {DRAIN_SECS:g} s:\n{report}")
            self.assertEqual(result.stalled, 0, f"no message held over {STALLED_MS:g} ms in any run:\n{report}")
        # Pooled over the runs: one run's p99 is 25 messages, at the mercy of a busy machine's scheduler.
        pooled = sorted(latency for result in results for latency in result.latencies)
        p99_ms = percentile_ms(pooled, 0.99)
        self.assertLessEqual(p99_ms, P99_BOUND_MS, f"p99 over all runs {p99_ms:.2f} ms, bound {P99_BOUND_MS:g} ms:\n{report}")

    def test_qos0_every_message_delivered_and_p99_within_10_ms(self):
        self.check_runs(0)

    def test_qos1_every_message_delivered_and_p99_within_10_ms(self):
        self.check_runs(1)


if __name__ == "__main__":
    unittest.main()
