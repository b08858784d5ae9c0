"""Clients nobody here wrote, against the real broker: paho-mqtt 2.x (MQTT 3.1.1 and 5) and the
mosquitto_pub / mosquitto_sub command-line clients.

The broker is the shardmq binary named by SHARDMQ_BIN, started like the Rust tests start it (127.0.0.1
port 0, 2 shards, port read from its "shardmq listening on" line); with SHARDMQ_TEST_BROKER=mosquitto it is
Mosquitto instead, to check the tests themselves.
"""

import itertools
import os
import queue
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

# A start takes milliseconds on a quiet machine but seconds when many brokers start on a loaded one.
STARTUP_TIMEOUT_SECS = 30
EVENT_TIMEOUT_SECS = 5
SILENCE_SECS = 0.3
_ids = itertools.count()


def unique(prefix):
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


def recv_up_to(sock, count):
    """Up to `count` bytes from `sock`: fewer only if the broker closes the connection first."""
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def disconnect_all(clients):
    """Disconnect every client of a test at tearDown, whatever state the test left it in."""
    for client in clients:
        try:
            client.disconnect()
        except Exception:
            pass


class Broker:
    """A broker process on a free loopback port; stop() ends it (SIGTERM, then SIGKILL). `mqtt_toml` is the
    body of shardmq's `[mqtt]` config table, `config_toml` top-level config text (both ignored by Mosquitto);
    `shards` is shardmq's shard count; `cpus`, when given, pins the process to those CPUs (as `taskset -c`
    would); `fifo_priority`, when given, runs it under SCHED_FIFO at that priority (as `chrt -f` would)."""

    def __init__(self, mqtt_toml=None, config_toml=None, shards=2, cpus=None, fifo_priority=None):
        self.kind = os.environ.get("SHARDMQ_TEST_BROKER", "shardmq")
        self.shards = shards

        def place():
            if cpus is not None:
                os.sched_setaffinity(0, cpus)
            if fifo_priority is not None:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(fifo_priority))

        self.pin = place if cpus is not None or fifo_priority is not None else None
        self.log = []
        self.config = None
        if (mqtt_toml is not None or config_toml is not None) and self.kind != "mosquitto":
            self.config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
            self.config.write(f"{config_toml or ''}\n")
            if mqtt_toml is not None:
                self.config.write(f"[mqtt]\n{mqtt_toml}\n")
            self.config.close()
        if self.kind == "mosquitto":
            self._start_mosquitto()
        else:
            self._start_shardmq()

    def _start_shardmq(self):
        binary = os.environ.get("SHARDMQ_BIN", "target/release/shardmq")
        config = ["--config", self.config.name] if self.config else []
        self.process = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--shards", str(self.shards), *config],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"},
            preexec_fn=self.pin,
        )
        threading.Thread(target=self._collect, args=(self.process.stderr,), daemon=True).start()
        lines = queue.Queue()
        threading.Thread(target=self._forward_lines, args=(self.process.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECS
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"shardmq printed no listening line within {STARTUP_TIMEOUT_SECS} s:\n" + "".join(self.log))
            match = re.fullmatch(r"shardmq listening on 127\.0\.0\.1:(\d+)", line.strip())
            if match and not hasattr(self, "port"):
                self.port = int(match.group(1))
            # The HTTP API and metrics listeners start after the MQTT one; "ready" follows them all.
            if line.strip() == "shardmq ready" and hasattr(self, "port"):
                return

    def _start_mosquitto(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.config = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
        self.config.write(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.config.close()
        self.process = subprocess.Popen(["mosquitto", "-c", self.config.name], preexec_fn=self.pin,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._collect, args=(self.process.stderr,), daemon=True).start()
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("mosquitto did not listen:\n" + "".join(self.log))
                time.sleep(0.02)

    def _collect(self, stream):
        for line in stream:
            self.log.append(line)

    @staticmethod
    def _forward_lines(stream, lines):
        for line in stream:
            lines.put(line)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()
        if self.config:
            os.unlink(self.config.name)


class ReceivingClient:
    """What the 3.1.1 and v5 test clients share: a paho client (`self.client`) whose network loop runs in a
    thread and whose received messages go to `self.messages`."""

    def next_message(self, timeout=EVENT_TIMEOUT_SECS):
        return self.messages.get(timeout=timeout)

    def assert_no_message(self, wait_secs=SILENCE_SECS):
        try:
            message = self.messages.get(timeout=wait_secs)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message on {message.topic}: {message.payload!r}")

    def disconnect(self):
        self.client.disconnect()
        self.client.loop_stop()

    def drop_connection(self):
        """Close the socket without DISCONNECT: the broker must publish the will."""
        self.client.loop_stop()
        self.client.socket().close()


class Client(ReceivingClient):
    """A paho client running its network loop in a thread; received messages and acks go to queues."""

    def __init__(self, port, protocol, client_id=None, will=None, clean=True):
        self.protocol = protocol
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or unique("paho"),
                                  protocol=protocol,
                                  clean_session=clean if protocol != mqtt.MQTTv5 else None)
        self.messages = queue.Queue()
        self.subscribed = queue.Queue()
        self.connected = queue.Queue()
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_subscribe = lambda _c, _u, mid, codes, _p: self.subscribed.put((mid, codes))
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self.connected.put(reason)
        if will:
            self.client.will_set(*will)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        reason = self.connected.get(timeout=EVENT_TIMEOUT_SECS)
        if reason.is_failure:
            raise AssertionError(f"CONNECT refused: {reason}")

    def subscribe(self, topic, qos):
        _, mid = self.client.subscribe(topic, qos)
        got_mid, codes = self.subscribed.get(timeout=EVENT_TIMEOUT_SECS)
        assert got_mid == mid
        return [code.value for code in codes]

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(timeout=EVENT_TIMEOUT_SECS)
        assert info.is_published(), f"PUBLISH to {topic} not acknowledged"



VERSIONS = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}


class BrokerTestCase(unittest.TestCase):
    """A fresh broker per test (`mqtt_toml`: its `[mqtt]` config table); the clients a test makes are
    recorded in `self.clients` and disconnected after it."""

    mqtt_toml = None
    config_toml = None

    def setUp(self):
        self.broker = Broker(self.mqtt_toml, self.config_toml)
        self.clients = []

    def tearDown(self):
        for client in self.clients:
            try:
                client.client.loop_stop()
                client.client.disconnect()
            except Exception:
                pass
        self.broker.stop()


class RetainedBytesLimitTest(BrokerTestCase):
    """`[mqtt] retained_max_bytes` bounds the topic + payload bytes of retained messages: a retained PUBLISH
    past it is delivered but not retained, and a delete makes room again."""

    mqtt_toml = "retained_max_bytes = 100"
    config_toml = "sys_interval_secs = 0"  # the $SYS topics are retained messages too

    def retained_topics(self, protocol):
        late = Client(self.broker.port, protocol)
        self.clients.append(late)
        late.subscribe("rb/#", 1)
        topics = []
        while True:
            try:
                message = late.next_message(timeout=1.0)
            except queue.Empty:
                return sorted(topics)
            self.assertTrue(message.retain)
            topics.append(message.topic)

    def test_a_retained_message_past_retained_max_bytes_is_not_retained_until_a_delete_makes_room(self):
        if self.broker.kind == "mosquitto":
            self.skipTest("Mosquitto has no retained byte limit")
        publisher = Client(self.broker.port, mqtt.MQTTv311)
        self.clients.append(publisher)
        for i in (1, 2, 3):  # 4 topic + 30 payload bytes each: the third would make 102 > 100
            publisher.publish(f"rb/{i}", "x" * 30, qos=1, retain=True)
        self.assertEqual(self.retained_topics(mqtt.MQTTv5), ["rb/1", "rb/2"])
        publisher.publish("rb/1", b"", qos=1, retain=True)
        publisher.publish("rb/3", "x" * 30, qos=1, retain=True)
        self.assertEqual(self.retained_topics(mqtt.MQTTv311), ["rb/2", "rb/3"])


class PahoTest(BrokerTestCase):

    def connect(self, protocol, **options):
        client = Client(self.broker.port, protocol, **options)
        self.clients.append(client)
        return client

    def test_publish_subscribe_qos_0_1_2(self):
        for name, protocol in VERSIONS.items():
            for qos in (0, 1, 2):
                with self.subTest(version=name, qos=qos):
                    topic = unique("paho/pubsub")
                    subscriber = self.connect(protocol)
                    self.assertEqual(subscriber.subscribe(topic, qos), [qos])
                    publisher = self.connect(protocol)
                    for i in range(10):
                        publisher.publish(topic, f"m{i}", qos=qos)
                    received = [subscriber.next_message() for _ in range(10)]
                    self.assertEqual([m.payload for m in received], [f"m{i}".encode() for i in range(10)])
                    self.assertTrue(all(m.qos == qos and m.topic == topic for m in received))
                    subscriber.assert_no_message()

    def test_retained_message_served_then_deleted(self):
        for name, protocol in VERSIONS.items():
            with self.subTest(version=name):
                topic = unique("paho/retained")
                publisher = self.connect(protocol)
                publisher.publish(topic, "kept", qos=1, retain=True)
                late = self.connect(protocol)
                late.subscribe(topic, 1)
                message = late.next_message()
                self.assertEqual((message.payload, message.retain), (b"kept", True))
                publisher.publish(topic, b"", qos=1, retain=True)
                later = self.connect(protocol)
                later.subscribe(topic, 1)
                later.assert_no_message()

    def test_will_published_on_abnormal_close_only(self):
        for name, protocol in VERSIONS.items():
            with self.subTest(version=name):
                will_topic = unique("paho/will")
                watcher = self.connect(protocol)
                watcher.subscribe(will_topic, 1)
                clean_leaver = self.connect(protocol, will=(will_topic, "clean", 1, False))
                clean_leaver.disconnect()
                watcher.assert_no_message()
                dropper = self.connect(protocol, will=(will_topic, "dropped", 1, False))
                dropper.drop_connection()
                self.assertEqual(watcher.next_message().payload, b"dropped")

    def test_v5_user_properties_reach_v5_and_not_v311(self):
        topic = unique("paho/properties")
        v5_subscriber = self.connect(mqtt.MQTTv5)
        v5_subscriber.subscribe(topic, 1)
        v311_subscriber = self.connect(mqtt.MQTTv311)
        v311_subscriber.subscribe(topic, 1)
        publisher = self.connect(mqtt.MQTTv5)
        properties = Properties(PacketTypes.PUBLISH)
        properties.UserProperty = [("a", "1"), ("b", "2")]
        properties.ResponseTopic = "reply/to"
        publisher.publish(topic, "with properties", qos=1, properties=properties)
        v5_message = v5_subscriber.next_message()
        self.assertEqual(v5_message.properties.UserProperty, [("a", "1"), ("b", "2")])
        self.assertEqual(v5_message.properties.ResponseTopic, "reply/to")
        self.assertEqual(v311_subscriber.next_message().payload, b"with properties")


class MosquittoCommandLineTest(unittest.TestCase):
    """mosquitto_pub / mosquitto_sub as subprocesses, for 3.1.1 and 5."""

    def setUp(self):
        self.broker = Broker()

    def tearDown(self):
        self.broker.stop()

    def sub(self, version, topic, count):
        return subprocess.Popen(
            ["mosquitto_sub", "-V", version, "-h", "127.0.0.1", "-p", str(self.broker.port), "-t", topic,
             "-q", "1", "-C", str(count), "-W", str(EVENT_TIMEOUT_SECS)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def pub(self, version, topic, message, *extra):
        subprocess.run(["mosquitto_pub", "-V", version, "-h", "127.0.0.1", "-p", str(self.broker.port),
                        "-t", topic, "-q", "1", "-m", message, *extra],
                       check=True, timeout=EVENT_TIMEOUT_SECS, capture_output=True)

    def test_round_trip(self):
        for sub_version, pub_version in itertools.product(("mqttv311", "mqttv5"), repeat=2):
            with self.subTest(subscriber=sub_version, publisher=pub_version):
                topic = unique("cli/round-trip")
                subscriber = self.sub(sub_version, topic, 1)
                # mosquitto_sub says nothing once subscribed: publish until it has received one.
                deadline = time.monotonic() + EVENT_TIMEOUT_SECS
                while subscriber.poll() is None and time.monotonic() < deadline:
                    self.pub(pub_version, topic, "hello")
                    time.sleep(0.1)
                out, err = subscriber.communicate(timeout=EVENT_TIMEOUT_SECS)
                self.assertEqual(subscriber.returncode, 0, err)
                self.assertEqual(out, "hello\n")

    def test_retained(self):
        for version in ("mqttv311", "mqttv5"):
            with self.subTest(version=version):
                topic = unique("cli/retained")
                self.pub(version, topic, "retained value", "-r")
                subscriber = self.sub(version, topic, 1)
                out, err = subscriber.communicate(timeout=EVENT_TIMEOUT_SECS + 2)
                self.assertEqual(subscriber.returncode, 0, err)
                self.assertEqual(out, "retained value\n")


if __name__ == "__main__":
    unittest.main()
