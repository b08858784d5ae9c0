"""The kill test (short form; `scripts/crash-test` runs it longer): shardmq with `[persistence]` in `sync`
(2 shards) is killed with SIGKILL while paho QoS 1 and QoS 2 publishers run, then restarted, several
times. Every message the broker acknowledged (PUBACK / PUBCOMP) reaches its persistent subscriber: QoS 1
at least once, QoS 2 exactly once; a subscriber stays online through the kills, another is offline until
the end; the retained message survives and the sessions resume with their subscriptions.

CRASH_ROUNDS and CRASH_MESSAGES (environment) make it longer. Skipped on Mosquitto.
"""

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import paho.mqtt.client as mqtt

ROUNDS = int(os.environ.get("CRASH_ROUNDS", "3"))
MESSAGES = int(os.environ.get("CRASH_MESSAGES", "150"))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Broker:
    def __init__(self, port, config):
        self.port, self.config = port, config
        self.process = None

    def start(self):
        binary = os.environ.get("SHARDMQ_BIN", "target/debug/shardmq")
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [binary, "--listen", f"127.0.0.1:{self.port}", "--shards", "2", "--config", self.config],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"})
        # "shardmq ready" follows the binding of every listener; a broker that exits first is reported
        # with its output (a connect probe alone could pass just before such an exit).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"broker exited with {self.process.returncode} at start:\n" + self.output())
            if "shardmq ready" in self.output():
                return
            time.sleep(0.05)
        raise RuntimeError("broker did not start:\n" + self.output())

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


class Subscriber:
    """A persistent (clean session false) paho client recording every payload it gets."""

    def __init__(self, port, client_id, topic, qos):
        self.received = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.topic, self.qos, self.port = topic, qos, port
        self.session_present = []
        self.client.on_message = self._message
        self.client.on_connect = lambda c, u, flags, rc, p: self.session_present.append(flags.session_present)

    def _message(self, client, userdata, message):
        with self.lock:
            self.received.append(message.payload.decode())

    def connect(self, subscribe):
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if subscribe:
            result, mid = self.client.subscribe(self.topic, self.qos)
            assert result == mqtt.MQTT_ERR_SUCCESS

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def publish_until_killed(port, topic, qos, prefix, count, acked, stop):
    """Publishes `count` messages, one at a time, recording those the broker acknowledged."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{prefix}", clean_session=True)
    pending = {}
    lock = threading.Lock()

    def on_publish(c, userdata, mid, reason_code, properties):
        with lock:
            if mid in pending:
                acked.add(pending.pop(mid))

    client.on_publish = on_publish
    try:
        client.connect("127.0.0.1", port)
    except OSError:
        return
    client.loop_start()
    for index in range(count):
        if stop.is_set():
            break
        payload = f"{prefix}-{index}"
        with lock:
            info = client.publish(topic, payload, qos)
            pending[info.mid] = payload
        try:
            info.wait_for_publish(2)
        except (RuntimeError, ValueError):
            break
        if not client.is_connected():
            break
    client.loop_stop()
    try:
        client.disconnect()
    except Exception:
        pass


class KillTest(unittest.TestCase):
    def setUp(self):
        if os.environ.get("SHARDMQ_TEST_BROKER") == "mosquitto":
            self.skipTest("shardmq persistence")
        self.dir = tempfile.mkdtemp(prefix="shardmq-crash-")
        self.config = os.path.join(self.dir, "shardmq.toml")
        with open(self.config, "w") as out:
            out.write(f'[persistence]\ndir = "{self.dir}/data"\ndurability = "sync"\n')
        self.broker = Broker(free_port(), self.config)
        self.broker.start()

    def tearDown(self):
        self.broker.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_every_acknowledged_message_survives_kill_9(self):
        port = self.broker.port
        online = Subscriber(port, "crash-online-q1", "crash/q1", 1)
        online.connect(subscribe=True)
        offline = Subscriber(port, "crash-offline-q2", "crash/q2", 2)
        offline.connect(subscribe=True)
        time.sleep(0.5)
        offline.close()
        retained = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="crash-retain")
        retained.connect("127.0.0.1", port)
        retained.loop_start()
        retained.publish("crash/retained", "kept", 1, retain=True).wait_for_publish(5)
        retained.loop_stop()
        retained.disconnect()
        acked_q1, acked_q2 = set(), set()
        for round_ in range(ROUNDS):
            stop = threading.Event()
            publishers = [
                threading.Thread(target=publish_until_killed,
                                 args=(port, "crash/q1", 1, f"r{round_}q1", MESSAGES, acked_q1, stop)),
                threading.Thread(target=publish_until_killed,
                                 args=(port, "crash/q2", 2, f"r{round_}q2", MESSAGES, acked_q2, stop)),
            ]
            for publisher in publishers:
                publisher.start()
            time.sleep(random.uniform(0.3, 1.5))
            self.broker.kill()
            stop.set()
            for publisher in publishers:
                publisher.join(10)
            self.broker.start()
        self.assertGreater(len(acked_q1), 0, "some QoS 1 messages were acknowledged before the kills")
        self.assertGreater(len(acked_q2), 0, "some QoS 2 messages were acknowledged before the kills")
        offline.connect(subscribe=False)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with online.lock, offline.lock:
                if acked_q1 <= set(online.received) and acked_q2 <= set(offline.received):
                    break
            time.sleep(0.2)
        time.sleep(0.5)
        online.close()
        offline.close()
        self.assertEqual(sorted(acked_q1 - set(online.received)), [], "acknowledged QoS 1 messages lost")
        missing = sorted(acked_q2 - set(offline.received))
        self.assertEqual(missing, [], "acknowledged QoS 2 messages lost")
        twice = sorted(p for p in acked_q2 if offline.received.count(p) > 1)
        self.assertEqual(twice, [], "QoS 2 messages delivered more than once")
        self.assertTrue(offline.session_present[-1], "the offline subscriber's session resumed")
        got = []
        checker = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="crash-retained-check")
        checker.on_message = lambda c, u, m: got.append((m.topic, m.payload.decode(), m.retain))
        checker.connect("127.0.0.1", port)
        checker.loop_start()
        checker.subscribe("crash/retained", 1)
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        checker.loop_stop()
        checker.disconnect()
        self.assertEqual(got, [("crash/retained", "kept", True)], "the retained message survived")


if __name__ == "__main__":
    unittest.main()
