"""$SYS/broker/... topics and Prometheus /metrics, end to end: paho (3.1.1 and 5) and mosquitto_sub read the
$SYS topics and see their counts move as clients connect and publish; clients cannot publish under $SYS;
/metrics is valid Prometheus text (checked by `promtool check metrics`) with per-shard series and totals.
"""

import os
import re
import shutil
import socket
import subprocess
import time
import unittest
import urllib.request

import paho.mqtt.client as mqtt

from test_paho import VERSIONS, Broker, Client, EVENT_TIMEOUT_SECS, disconnect_all
from transport_broker import free_port

WAIT_SECS = 10


def sys_config(interval_secs, metrics_port):
    return f'sys_interval_secs = {interval_secs}\n[metrics]\nbind = "127.0.0.1:{metrics_port}"\n'


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200, response.status
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return response.read().decode()


def series(text, name, **labels):
    """The value of the series `name` whose labels include `labels`, summed over the other labels."""
    total, found = 0, False
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)\{(.*)\} (\S+)", line)
        if not match or match.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2)))
        if all(have.get(key) == value for key, value in labels.items()):
            total, found = total + float(match.group(3)), True
    assert found, f"no series {name}{labels}"
    return total


class SysTopics:
    """Collects the latest payload of every $SYS/broker topic a paho client receives."""

    def __init__(self, client):
        self.client = client
        self.latest = {}

    def pump(self):
        while not self.client.messages.empty():
            message = self.client.messages.get()
            self.latest[message.topic] = message.payload.decode()

    def wait_for(self, topic, predicate, what):
        deadline = time.monotonic() + WAIT_SECS
        while time.monotonic() < deadline:
            self.pump()
            if topic in self.latest and predicate(self.latest[topic]):
                return self.latest[topic]
            time.sleep(0.1)
        raise AssertionError(f"{topic} never {what}; last {self.latest.get(topic)!r}")


class SysTopicsTest(unittest.TestCase):
    def setUp(self):
        self.metrics_port = free_port()
        self.broker = Broker(config_toml=sys_config(1, self.metrics_port))
        self.clients = []

    def tearDown(self):
        disconnect_all(self.clients)
        self.broker.stop()

    def connect(self, protocol, **options):
        client = Client(self.broker.port, protocol, **options)
        self.clients.append(client)
        return client

    def check_counts_move(self, protocol):
        watcher = self.connect(protocol)
        self.assertEqual(watcher.subscribe("$SYS/broker/#", 0), [0])
        sys = SysTopics(watcher)
        version = sys.wait_for("$SYS/broker/version", lambda v: v.startswith("shardmq version "), "named shardmq")
        self.assertRegex(version, r"^shardmq version \d+\.\d+")
        sys.wait_for("$SYS/broker/uptime", lambda v: re.fullmatch(r"\d+ seconds", v), "in seconds")
        before = int(sys.wait_for("$SYS/broker/clients/connected", lambda v: int(v) >= 1, "counted the watcher"))
        received = int(sys.wait_for("$SYS/broker/publish/messages/received", lambda v: True, "published"))
        publishers = [self.connect(protocol) for _ in range(3)]
        for index, publisher in enumerate(publishers):
            publisher.publish(f"sys-test/{index}", b"x" * 100, qos=1)
            publisher.publish(f"sys-test/{index}", b"y", qos=0)
        sys.wait_for("$SYS/broker/clients/connected", lambda v: int(v) >= before + 3, "counted the publishers")
        sys.wait_for("$SYS/broker/clients/maximum", lambda v: int(v) >= before + 3, "raised the maximum")
        sys.wait_for("$SYS/broker/publish/messages/received", lambda v: int(v) >= received + 6, "counted PUBLISHes")
        sys.wait_for("$SYS/broker/bytes/received", lambda v: int(v) > 300, "counted socket bytes")
        sys.wait_for("$SYS/broker/load/publish/received/1min", lambda v: float(v) > 0, "moved")
        for publisher in publishers:
            publisher.disconnect()
            self.clients.remove(publisher)
        sys.wait_for("$SYS/broker/clients/connected", lambda v: int(v) == before, "went back down")
        for topic in ["messages/received", "messages/sent", "bytes/sent", "subscriptions/count",
                      "retained messages/count", "clients/total", "clients/expired", "clients/disconnected",
                      "publish/messages/dropped", "load/connections/5min", "load/bytes/received/15min"]:
            self.assertIn(f"$SYS/broker/{topic}", sys.latest)

    def test_sys_counts_move_as_clients_connect_and_publish_v311(self):
        self.check_counts_move(mqtt.MQTTv311)

    def test_sys_counts_move_as_clients_connect_and_publish_v5(self):
        self.check_counts_move(mqtt.MQTTv5)

    def test_mosquitto_sub_reads_the_retained_sys_topics(self):
        # Retained: a subscriber that arrives between two intervals gets every topic at once.
        time.sleep(1.5)
        result = subprocess.run(["mosquitto_sub", "-p", str(self.broker.port), "-t", "$SYS/#", "-v", "-W", "3"],
                                capture_output=True, text=True, timeout=10)
        lines = result.stdout.splitlines()
        self.assertTrue(any(re.fullmatch(r"\$SYS/broker/uptime \d+ seconds", line) for line in lines), lines)
        self.assertTrue(any(line.startswith("$SYS/broker/clients/connected ") for line in lines), lines)
        self.assertGreater(len(lines), 40, lines)

    def test_clients_cannot_publish_under_sys(self):
        for protocol in VERSIONS.values():
            publisher = self.connect(protocol)
            publisher.publish("$SYS/forged/by-client", b"forged", qos=1, retain=True)
            publisher.publish("$SYS/broker/uptime", b"forged", qos=0, retain=True)
        denied = series(scrape(self.metrics_port), "shardmq_publishes_denied_total", shard="all")
        self.assertGreaterEqual(denied, 4)
        reader = self.connect(mqtt.MQTTv311)
        reader.subscribe("$SYS/#", 0)
        time.sleep(1.5)
        seen = SysTopics(reader)
        seen.pump()
        self.assertNotIn("$SYS/forged/by-client", seen.latest)
        self.assertNotEqual(seen.latest.get("$SYS/broker/uptime"), "forged")
        self.assertIn("$SYS/broker/uptime", seen.latest)


class SysIntervalZeroTest(unittest.TestCase):
    def test_sys_interval_zero_publishes_no_sys_topics(self):
        broker = Broker(config_toml="sys_interval_secs = 0\n")
        try:
            client = Client(broker.port, mqtt.MQTTv5)
            client.subscribe("$SYS/#", 0)
            client.assert_no_message(wait_secs=1.5)
            client.disconnect()
        finally:
            broker.stop()


class MetricsTest(unittest.TestCase):
    def setUp(self):
        self.metrics_port = free_port()
        self.broker = Broker(config_toml=sys_config(0, self.metrics_port), shards=2)

    def tearDown(self):
        self.broker.stop()

    def test_metrics_count_by_qos_per_shard_and_in_total(self):
        text = scrape(self.metrics_port)
        for shard in ("0", "1", "all"):
            self.assertEqual(series(text, "shardmq_clients_connected", shard=shard), 0)
        before = series(text, "shardmq_messages_received_total", shard="all", qos="1")
        clients = [Client(self.broker.port, protocol) for protocol in VERSIONS.values()]
        subscriber = clients[0]
        subscriber.subscribe("metrics/#", 1)
        for count in range(5):
            clients[1].publish("metrics/x", b"payload", qos=1)
        clients[1].publish("metrics/x", b"payload", qos=0)
        for _ in range(6):
            subscriber.next_message()
        text = scrape(self.metrics_port)
        self.assertEqual(series(text, "shardmq_clients_connected", shard="all"), 2)
        self.assertEqual(series(text, "shardmq_clients_connected", shard="0")
                         + series(text, "shardmq_clients_connected", shard="1"), 2)
        self.assertEqual(series(text, "shardmq_messages_received_total", shard="all", qos="1"), before + 5)
        self.assertEqual(series(text, "shardmq_messages_received_total", shard="all", qos="0"), 1)
        self.assertEqual(series(text, "shardmq_messages_sent_total", shard="all", qos="1"), 5)
        self.assertEqual(series(text, "shardmq_subscriptions", shard="all"), 1)
        self.assertGreater(series(text, "shardmq_bytes_received_total", shard="all"), 6 * len(b"payload"))
        self.assertEqual(series(text, "shardmq_connects_accepted_total", shard="all"), 2)
        for client in clients:
            client.disconnect()

    def test_refused_connects_are_counted_by_reason(self):
        # A 3.1.1 CONNECT with an empty client id and clean session 0 is refused [MQTT-3.1.3-8] (return code 2,
        # counted as 0x85); raw bytes, since paho will not send it.
        connect = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 0x00, 0, 30, 0, 0])
        with socket.create_connection(("127.0.0.1", self.broker.port), timeout=5) as raw:
            raw.sendall(connect)
            self.assertEqual(raw.recv(4), bytes([0x20, 2, 0, 2]), "CONNACK return code 2 (identifier rejected)")
        deadline = time.monotonic() + EVENT_TIMEOUT_SECS
        while time.monotonic() < deadline:
            text = scrape(self.metrics_port)
            if "shardmq_connects_refused_total{shard=\"all\",reason_code=\"0x85\"" in text:
                break
            time.sleep(0.1)
        self.assertEqual(series(text, "shardmq_connects_refused_total", shard="all", reason_code="0x85"), 1)

    def test_promtool_accepts_the_metrics(self):
        promtool = shutil.which("promtool")
        if promtool is None:
            self.skipTest("promtool (Debian package prometheus) is not installed; scripts/test installs it")
        Client(self.broker.port, mqtt.MQTTv5).publish("a", b"b", qos=1)
        text = scrape(self.metrics_port)
        result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_unknown_paths_are_404_and_the_dashboard_is_served(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/", timeout=5) as response:
            page = response.read().decode()
        self.assertIn("<canvas id=\"chart-messages\"", page)
        with self.assertRaises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/nope", timeout=5)
        self.assertEqual(refused.exception.code, 404)


if __name__ == "__main__":
    unittest.main()
