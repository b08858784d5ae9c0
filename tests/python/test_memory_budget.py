"""The process memory budget (`memory_max_bytes`, Mosquitto's `memory_limit`) with paho-mqtt against the
real broker: grown past a budget a few MiB above its resident size at start with 1 KiB retained messages,
it sheds load: new CONNECTs are refused (v5 0x97 Quota exceeded, 3.1.1 return code 3) with one warning,
while clients already connected still publish and receive QoS 1. Once the retained messages are deleted
and the quiet shards gave the memory back (src/shard/idle_trim.rs) it is below 90% of the budget and
accepts CONNECTs again, with one info line. Every loop is bounded in count and time.
"""

import os
import queue
import socket
import time
import unittest

import paho.mqtt.client as mqtt

from test_external_auth import log_has
from test_paho import EVENT_TIMEOUT_SECS, Broker, Client, disconnect_all, recv_up_to, unique
from test_paho_v5 import V5Client
from test_sys_metrics import scrape
from transport_broker import free_port
from transport_raw import mqtt_connect_packet

PAYLOAD = b"r" * 1024
# The budget sits this far above the broker's resident size once started: ~7,000 retained messages fill
# it, and recovering (below 90% of the budget) needs about a fifth of their memory back.
MARGIN_BYTES = 10 * 1024 * 1024
# Retained messages are published in batches, a CONNECT tried after each.
BATCH = 250
MESSAGES_MAX = 40_000
GROW_TIMEOUT_SECS = 90
# Memory comes back through the shards' idle trim (once a second when quiet) and the sampler (5 a second).
RECOVER_TIMEOUT_SECS = 30
SETTLE_SECS = 1.5
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def resident_bytes(pid):
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES


def v5_connack_reason(port):
    """One MQTT 5 CONNECT by paho: the CONNACK reason code value."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, client_id=unique("late-v5"),
                         reconnect_on_failure=False)
    connacks = queue.Queue()
    client.on_connect = lambda _c, _u, _f, reason, _p: connacks.put(reason.value)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        return connacks.get(timeout=EVENT_TIMEOUT_SECS)
    finally:
        client.disconnect()
        client.loop_stop()


def v311_connack_return_code(port):
    """One MQTT 3.1.1 CONNECT in raw bytes: the CONNACK's return code, exactly as sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=EVENT_TIMEOUT_SECS) as sock:
        sock.sendall(mqtt_connect_packet(unique("late-v311")))
        connack = recv_up_to(sock, 4)
    assert connack[:3] == b"\x20\x02\x00", f"not a 3.1.1 CONNACK: {connack!r}"
    return connack[3]


def gauge(text, name):
    """The value of an unlabelled family (the process-wide memory ones)."""
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


class MemoryBudgetTest(unittest.TestCase):
    def setUp(self):
        if os.environ.get("SHARDMQ_TEST_BROKER") == "mosquitto":
            self.skipTest("Mosquitto's memory_limit fails allocations instead of refusing CONNECTs with 0x97")
        probe = Broker(config_toml="sys_interval_secs = 0")
        time.sleep(SETTLE_SECS)
        self.started_bytes = resident_bytes(probe.process.pid)
        probe.stop()
        self.budget_bytes = self.started_bytes + MARGIN_BYTES
        self.metrics_port = free_port()
        self.broker = Broker(config_toml=f'memory_max_bytes = {self.budget_bytes}\nsys_interval_secs = 0\n'
                                         f'[metrics]\nbind = "127.0.0.1:{self.metrics_port}"\n')
        self.clients = []

    def tearDown(self):
        disconnect_all(self.clients)
        self.broker.stop()

    def connected(self, client):
        self.clients.append(client)
        return client

    def grow_until_refused(self, publisher, prefix):
        """Retained messages in batches until a v5 CONNECT is refused; returns their topics and that reason."""
        topics, reason = [], 0
        deadline = time.monotonic() + GROW_TIMEOUT_SECS
        while reason == 0 and len(topics) < MESSAGES_MAX and time.monotonic() < deadline:
            for _ in range(BATCH):
                topics.append(f"{prefix}/{len(topics)}")
                info = publisher.client.publish(topics[-1], PAYLOAD, qos=1, retain=True)
            info.wait_for_publish(timeout=EVENT_TIMEOUT_SECS)
            self.assertTrue(info.is_published(), "the batch of retained messages was not acknowledged")
            time.sleep(0.25)  # one sample of the budget's sampler
            reason = v5_connack_reason(self.broker.port)
        rss = resident_bytes(self.broker.process.pid)
        print(f"\nstarted at {self.started_bytes / 2**20:.1f} MiB, budget {self.budget_bytes / 2**20:.1f} MiB: "
              f"refused after {len(topics)} retained messages of 1 KiB at {rss / 2**20:.1f} MiB")
        return topics, reason

    def assert_qos1_round_trip(self, client, topic):
        client.publish(topic, b"still served", qos=1)
        message = client.next_message()
        self.assertEqual((message.topic, message.payload, message.qos), (topic, b"still served", 1))

    def test_over_memory_max_bytes_connects_get_0x97_and_return_code_3_connected_clients_keep_qos1_and_delete_recovers(self):
        keeper_v5 = self.connected(V5Client(self.broker.port))
        keeper_v311 = self.connected(Client(self.broker.port, mqtt.MQTTv311))
        own_topics = (unique("budget/keep5"), unique("budget/keep311"))
        self.assertEqual(keeper_v5.subscribe(own_topics[0], 1), 1)
        self.assertEqual(keeper_v311.subscribe(own_topics[1], 1), [1])
        publisher = self.connected(V5Client(self.broker.port))

        topics, reason = self.grow_until_refused(publisher, unique("budget/retained"))
        self.assertEqual(reason, 0x97, f"no CONNECT refused with Quota exceeded after {len(topics)} messages")
        self.assertEqual(v311_connack_return_code(self.broker.port), 3, "3.1.1: Server unavailable")
        self.assertTrue(log_has(self.broker, "WARN", "memory over memory_max_bytes", "shedding load"))
        metrics = scrape(self.metrics_port)
        self.assertEqual(gauge(metrics, "shardmq_memory_shedding"), 1)
        self.assertEqual(gauge(metrics, "shardmq_memory_max_bytes"), self.budget_bytes)
        self.assertGreater(gauge(metrics, "shardmq_memory_resident_bytes"), self.budget_bytes * 0.9)
        self.assert_qos1_round_trip(keeper_v5, own_topics[0])
        self.assert_qos1_round_trip(keeper_v311, own_topics[1])

        for topic in topics:
            info = publisher.client.publish(topic, b"", qos=1, retain=True)
        info.wait_for_publish(timeout=EVENT_TIMEOUT_SECS)
        self.assertTrue(info.is_published(), "the deletes were not acknowledged")
        deadline = time.monotonic() + RECOVER_TIMEOUT_SECS
        while reason != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            reason = v5_connack_reason(self.broker.port)
        rss = resident_bytes(self.broker.process.pid)
        self.assertEqual(reason, 0, f"still refused {RECOVER_TIMEOUT_SECS} s after the delete, at {rss / 2**20:.1f} "
                                    f"MiB (recovers below {self.budget_bytes * 0.9 / 2**20:.1f} MiB)")
        print(f"accepted again at {rss / 2**20:.1f} MiB")
        self.assertEqual(v311_connack_return_code(self.broker.port), 0)
        self.assertTrue(log_has(self.broker, "INFO", "shedding ended"))
        self.assertEqual(gauge(scrape(self.metrics_port), "shardmq_memory_shedding"), 0)
        self.assertEqual(gauge(scrape(self.metrics_port), "shardmq_memory_shedding_started_total"), 1)


if __name__ == "__main__":
    unittest.main()
