"""Persistence at its edges, shardmq in `durability = "sync"`:

- a full disk (the data directory on a 2 MiB tmpfs, filled by a filler file): new QoS 1 publishes are
  refused with v5 PUBACK 0x97 (Quota exceeded), a 3.1.1 publisher is disconnected without a PUBACK, QoS 0
  still flows, the log says why; once the filler is gone QoS 1 is accepted again, and after a kill -9
  every message acknowledged before, during and after is delivered to the persistent subscriber;
- the HTTP publish answer waits for the disk: with writes failing (reserve off, disk full) a QoS 1
  `POST /api/v1/publish` gets no answer until space returns, then 200, and the message is there after a
  kill -9; meanwhile a new QoS 1 publish is refused with 503 and QoS 0 is published;
- tokens and dynamic-security state: an API token created over HTTP and a dynsec client created with
  `mosquitto_ctrl` just before a kill -9 log in after the restart (both files are replaced through a
  synced temporary, renamed, directory synced, before the answer);
- expiry counted across the downtime: a queued message whose Message Expiry Interval ran out while the
  broker was down is not delivered after the restart, one with time left is; a session whose Session
  Expiry Interval ran out meanwhile is gone.

The tmpfs needs mount(2) (root): without it the full-disk test is skipped, saying so. Skipped on
Mosquitto. About 15 s.
"""

import errno
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from test_persistence import Broker, free_port

QUOTA_EXCEEDED = 0x97
ADMIN = "persistence-disk-admin-token"


def http_publish(port, topic, payload, qos):
    """POST /api/v1/publish; (status, JSON body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    body = json.dumps({"topic": topic, "payload": payload, "qos": qos})
    connection.request("POST", "/api/v1/publish", body=body,
                       headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
    response = connection.getresponse()
    answer = (response.status, json.loads(response.read() or b"null"))
    connection.close()
    return answer


class V5Client:
    """A paho v5 client that records what it receives and the reason code of each acknowledgement."""

    def __init__(self, port, client_id, session_expiry=0, clean_start=True):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.received, self.acks = [], {}
        self.session_present = None
        self.cond = threading.Condition()
        self.client.on_message = self._message
        self.client.on_publish = self._publish
        self.client.on_connect = self._connect
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = session_expiry
        self.client.connect("127.0.0.1", port, clean_start=clean_start, properties=properties)
        self.client.loop_start()
        self.wait(lambda: self.session_present is not None, "CONNACK")

    def _connect(self, client, userdata, flags, reason_code, properties):
        with self.cond:
            self.session_present = flags.session_present
            self.cond.notify_all()

    def _message(self, client, userdata, message):
        with self.cond:
            self.received.append(message.payload.decode())
            self.cond.notify_all()

    def _publish(self, client, userdata, mid, reason_code, properties):
        with self.cond:
            self.acks[mid] = reason_code.value
            self.cond.notify_all()

    def wait(self, predicate, what, timeout=10):
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError(f"timed out waiting for {what}")

    def publish(self, topic, payload, qos, expiry=None):
        """Publishes and, for QoS > 0, returns the acknowledgement's reason code."""
        properties = None
        if expiry is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.MessageExpiryInterval = expiry
        info = self.client.publish(topic, payload, qos, properties=properties)
        if qos == 0:
            return None
        self.wait(lambda: info.mid in self.acks, f"the acknowledgement of {payload}")
        return self.acks[info.mid]

    def subscribe(self, topic, qos):
        result, _ = self.client.subscribe(topic, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS
        time.sleep(0.3)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def fill(directory):
    """Writes a filler file until the file system is full; returns its path."""
    path = os.path.join(directory, "filler")
    chunk = b"\0" * 4096
    with open(path, "wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
    return path


def wait_listening(port):
    """The HTTP API starts after the MQTT listeners: wait until it accepts too."""
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def mount_tmpfs(test):
    """A 2 MiB tmpfs for the data directory, or the test is skipped saying why."""
    if os.environ.get("SHARDMQ_TEST_BROKER") == "mosquitto":
        test.skipTest("shardmq persistence")
    data = tempfile.mkdtemp(prefix="shardmq-tmpfs-")
    test.addCleanup(shutil.rmtree, data, True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", data], capture_output=True, text=True)
    if mount.returncode != 0:
        test.skipTest(f"cannot mount a tmpfs for the full-disk test (needs root): {mount.stderr.strip()}")
    test.addCleanup(subprocess.run, ["umount", "-l", data])
    return data


def sync_broker(test, data, extra=""):
    directory = tempfile.mkdtemp(prefix="shardmq-disk-")
    test.addCleanup(shutil.rmtree, directory, True)
    config = os.path.join(directory, "shardmq.toml")
    with open(config, "w") as out:
        out.write(f'[persistence]\ndir = "{data}"\ndurability = "sync"\n{extra}')
    broker = Broker(free_port(), config)
    broker.start()
    test.addCleanup(broker.stop)
    return broker


class FullDiskTest(unittest.TestCase):
    def setUp(self):
        self.data = mount_tmpfs(self)
        # A reserve well under the 2 MiB disk, so the disk counts as full only once the filler is there.
        self.broker = sync_broker(self, self.data, "reserve_bytes = 65536\n")

    def test_full_disk_refuses_qos1_with_0x97_keeps_qos0_and_recovers(self):
        port = self.broker.port
        subscriber = V5Client(port, "disk-sub", session_expiry=3600, clean_start=True)
        subscriber.subscribe("disk/q1", 1)
        subscriber.close()
        watcher = V5Client(port, "disk-q0-watcher")
        watcher.subscribe("disk/q0", 0)
        publisher = V5Client(port, "disk-pub")
        acked = []
        for index in range(20):
            payload = f"before-{index}"
            self.assertEqual(publisher.publish("disk/q1", payload, 1), 0, "accepted while there is space")
            acked.append(payload)

        filler = fill(self.data)
        refused = False
        deadline = time.monotonic() + 10
        index = 0
        while time.monotonic() < deadline and not refused:
            payload = f"filling-{index}"
            index += 1
            reason = publisher.publish("disk/q1", payload, 1)
            if reason == QUOTA_EXCEEDED:
                refused = True
            else:
                self.assertEqual(reason, 0, "a QoS 1 publish is either kept or refused with 0x97")
                acked.append(payload)  # went into the reserve: on disk, so acknowledged
                time.sleep(0.1)
        self.assertTrue(refused, "a QoS 1 publish on a full disk is refused with PUBACK 0x97")
        self.assertIn("disk full", self.broker.output(), "the log says why")

        publisher.publish("disk/q0", "qos0-while-full", 0)
        watcher.wait(lambda: "qos0-while-full" in watcher.received, "QoS 0 delivery while the disk is full")

        legacy_closed = threading.Event()
        legacy_acked = threading.Event()
        legacy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="disk-v311", protocol=mqtt.MQTTv311)
        legacy.on_disconnect = lambda *args: legacy_closed.set()
        legacy.on_publish = lambda *args: legacy_acked.set()
        legacy.connect("127.0.0.1", port)
        legacy.loop_start()
        legacy.publish("disk/q1", "v311-while-full", 1)
        self.assertTrue(legacy_closed.wait(5), "a 3.1.1 QoS 1 publish on a full disk closes the connection")
        self.assertFalse(legacy_acked.is_set(), "and is not acknowledged")
        legacy.loop_stop()

        os.remove(filler)
        accepted = False
        deadline = time.monotonic() + 10
        index = 0
        while time.monotonic() < deadline and not accepted:
            payload = f"after-{index}"
            index += 1
            reason = publisher.publish("disk/q1", payload, 1)
            if reason == 0:
                accepted = True
                acked.append(payload)
            else:
                self.assertEqual(reason, QUOTA_EXCEEDED)
                time.sleep(0.2)
        self.assertTrue(accepted, "QoS 1 is accepted again once space returns")
        self.assertIn("disk space is back", self.broker.output())
        publisher.close()
        watcher.close()

        self.broker.kill()
        self.broker.start()
        subscriber = V5Client(port, "disk-sub", session_expiry=3600, clean_start=False)
        self.assertTrue(subscriber.session_present, "the persistent session survived")
        subscriber.wait(lambda: set(acked) <= set(subscriber.received),
                        "every acknowledged message after the restart")
        self.assertNotIn("v311-while-full", subscriber.received, "the unacknowledged 3.1.1 message was not kept")
        subscriber.close()


class HttpPublishDurabilityTest(unittest.TestCase):
    def setUp(self):
        self.data = mount_tmpfs(self)
        self.http_port = free_port()
        # No reserve: a full disk makes the log write itself fail, so nothing new can become durable.
        self.broker = sync_broker(
            self, self.data,
            f'reserve_bytes = 0\n[http]\nbind = "127.0.0.1:{self.http_port}"\nadmin_token = "{ADMIN}"\n')
        wait_listening(self.http_port)

    def test_http_publish_answers_only_once_the_message_is_on_disk(self):
        subscriber = V5Client(self.broker.port, "http-sub", session_expiry=3600)
        subscriber.subscribe("http/q1", 1)
        subscriber.close()
        self.assertEqual(http_publish(self.http_port, "http/q1", "http-before", 1)[0], 200)

        filler = fill(self.data)
        answers = []
        # Larger than the slack in the log's last page, so its record needs space the disk lacks.
        held = threading.Thread(
            target=lambda: answers.append(http_publish(self.http_port, "http/q1", "held-" + "x" * 8192, 1)))
        held.start()
        held.join(2)
        self.assertEqual(answers, [], "no answer while the message cannot be written")
        status, body = http_publish(self.http_port, "http/q1", "http-refused", 1)
        self.assertEqual(status, 503, body)
        self.assertIn("disk is full", body["message"])
        self.assertEqual(http_publish(self.http_port, "http/q0", "qos0-while-full", 0)[0], 200)

        os.remove(filler)
        held.join(10)
        self.assertEqual([status for status, _ in answers], [200], "answered once the write succeeded")
        self.broker.kill()
        self.broker.start()
        subscriber = V5Client(self.broker.port, "http-sub", session_expiry=3600, clean_start=False)
        subscriber.wait(lambda: len(subscriber.received) >= 2, "the messages published over HTTP")
        time.sleep(0.3)
        self.assertEqual([payload[:5] for payload in subscriber.received], ["http-", "held-"])
        self.assertNotIn("http-refused", subscriber.received)
        subscriber.close()


def login(port, username, password):
    """The CONNACK reason of a v5 login."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"login-{time.monotonic_ns()}",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    reasons = []
    done = threading.Event()

    def on_connect(c, userdata, flags, reason_code, properties):
        reasons.append(reason_code.value)
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    done.wait(10)
    client.loop_stop()
    client.disconnect()
    return reasons[0] if reasons else None


class AuthStateSurvivesKillTest(unittest.TestCase):
    def setUp(self):
        if os.environ.get("SHARDMQ_TEST_BROKER") == "mosquitto":
            self.skipTest("shardmq persistence")
        if shutil.which("mosquitto_ctrl") is None:
            self.skipTest("mosquitto_ctrl is not installed (scripts/test installs mosquitto-clients)")
        self.dir = tempfile.mkdtemp(prefix="shardmq-authkill-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.dynsec = os.path.join(self.dir, "dynamic-security.json")
        init = subprocess.run(["mosquitto_ctrl", "dynsec", "init", self.dynsec, "admin", "admin-pw"],
                              capture_output=True, text=True, timeout=30)
        self.assertEqual(init.returncode, 0, init.stderr)
        self.http_port = free_port()
        tokens = os.path.join(self.dir, "tokens.json")
        self.broker = sync_broker(
            self, os.path.join(self.dir, "data"),
            f'[auth]\nallow_anonymous = false\ndynamic_security_file = {json.dumps(self.dynsec)}\n'
            f'[http]\nbind = "127.0.0.1:{self.http_port}"\nadmin_token = "{ADMIN}"\n'
            f'tokens_file = {json.dumps(tokens)}\n')
        wait_listening(self.http_port)

    def test_token_and_dynsec_client_made_just_before_kill_9_are_there_after(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        connection.request("POST", "/api/v1/tokens", body=json.dumps({"acl": [{"filter": "kill/#", "actions": ["publish"]}], "ttl_seconds": 600}),
                           headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
        response = connection.getresponse()
        created = json.loads(response.read())
        self.assertEqual(response.status, 201, created)
        connection.close()
        ctrl = subprocess.run(["mosquitto_ctrl", "-h", "127.0.0.1", "-p", str(self.broker.port), "-u", "admin",
                               "-P", "admin-pw", "dynsec", "createClient", "kill-alice", "-p", "alice-pw"],
                              capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        self.assertEqual(ctrl.returncode, 0, ctrl.stdout + ctrl.stderr)
        self.assertNotIn("Error", ctrl.stdout + ctrl.stderr)
        self.broker.kill()
        self.broker.start()
        self.assertEqual(login(self.broker.port, created["token"], ""), 0, "the token logs in after kill -9")
        self.assertEqual(login(self.broker.port, "kill-alice", "alice-pw"), 0,
                         "the dynsec client logs in after kill -9")
        self.assertNotEqual(login(self.broker.port, "kill-alice", "wrong"), 0, "and only with its password")


class ExpiryAcrossDowntimeTest(unittest.TestCase):
    def setUp(self):
        if os.environ.get("SHARDMQ_TEST_BROKER") == "mosquitto":
            self.skipTest("shardmq persistence")
        data = tempfile.mkdtemp(prefix="shardmq-expiry-")
        self.addCleanup(shutil.rmtree, data, True)
        self.broker = sync_broker(self, data)

    def test_expiry_counts_the_time_the_broker_was_down(self):
        port = self.broker.port
        lasting = V5Client(port, "expiry-lasting", session_expiry=3600)
        lasting.subscribe("expiry/q1", 1)
        lasting.close()
        brief = V5Client(port, "expiry-brief", session_expiry=2)
        brief.subscribe("expiry/q1", 1)
        brief.close()
        publisher = V5Client(port, "expiry-pub")
        self.assertEqual(publisher.publish("expiry/q1", "short-lived", 1, expiry=2), 0)
        self.assertEqual(publisher.publish("expiry/q1", "long-lived", 1, expiry=600), 0)
        publisher.close()
        self.broker.kill()
        time.sleep(3)  # both 2 s expiries run out while the broker is down
        self.broker.start()
        lasting = V5Client(port, "expiry-lasting", session_expiry=3600, clean_start=False)
        self.assertTrue(lasting.session_present)
        lasting.wait(lambda: "long-lived" in lasting.received, "the message with time left")
        time.sleep(0.5)
        self.assertEqual(lasting.received, ["long-lived"], "the message that expired while down is dropped")
        lasting.close()
        brief = V5Client(port, "expiry-brief", session_expiry=2, clean_start=False)
        self.assertFalse(brief.session_present, "the session that expired while down is gone")
        brief.close()


if __name__ == "__main__":
    unittest.main()
