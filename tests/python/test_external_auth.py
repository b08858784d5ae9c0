"""External authentication and authorization over HTTP (`[auth.http]`) against the real broker (2 shards):
an HTTP auth server started here (http.server) allows, denies, hangs, answers 500 or garbage. Checks the
CONNACK codes for v5 (paho) and 3.1.1 (raw bytes), fail closed with a log line naming the backend and the
reason, another client connecting and publishing while one CONNECT hangs, the cache (the server is asked
once within the TTL), and publish / subscribe decisions (also a held PUBLISH while others go on).

Start the broker as test_paho.py does (SHARDMQ_BIN). Skipped on Mosquitto.
"""

import json
import os
import queue
import socket
import struct
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from test_paho import EVENT_TIMEOUT_SECS, Broker, recv_up_to, unique

TIMEOUT_MS = 800
HANG_SECS = 3


class AuthServer:
    """The HTTP backend: users alice/pw (allowed), `hang` (never answers in time), `err` (500), `junk`
    (200 with HTML); topics under allowed/ are allowed, denied/ denied, hang/ hang, err/ 500."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append((self.path, body))
                key = body.get("username") if self.path == "/auth" else body.get("topic", "").split("/")[0]
                if key == "hang":
                    time.sleep(HANG_SECS)
                if key == "err":
                    return self.answer(500, b"internal error")
                if key == "junk":
                    return self.answer(200, b"<html>not json</html>")
                if self.path == "/auth":
                    allowed = body.get("username") == "alice" and body.get("password") == "pw"
                else:
                    allowed = key in ("allowed", "hang")
                self.answer(200, json.dumps({"result": "allow" if allowed else "deny"}).encode())

            def answer(self, status, payload):
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the broker gave up on a hanging answer

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def count(self, path, **fields):
        with self.lock:
            return sum(1 for got, body in self.requests
                       if got == path and all(body.get(name) == value for name, value in fields.items()))

    def stop(self):
        self.http.shutdown()
        self.http.server_close()


class Client:
    """A paho MQTTv5 client; `refused` holds the CONNACK reason value when refused."""

    def __init__(self, port, username=None, password=None, client_id=None):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=client_id or unique("ext"), reconnect_on_failure=False)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.messages, self.subscribed, self.acknowledged = queue.Queue(), queue.Queue(), queue.Queue()
        connected = queue.Queue()
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_subscribe = lambda _c, _u, mid, codes, _p: self.subscribed.put((mid, codes))
        self.client.on_publish = lambda _c, _u, mid, reason, _p: self.acknowledged.put((mid, reason))
        self.client.on_connect = lambda _c, _u, _f, reason, _p: connected.put(reason)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        reason = connected.get(timeout=EVENT_TIMEOUT_SECS)
        self.refused = reason.value if reason.is_failure else None
        if self.refused is not None:
            self.client.loop_stop()

    def subscribe(self, topic):
        _, mid = self.client.subscribe(topic, options=SubscribeOptions(qos=1))
        got_mid, codes = self.subscribed.get(timeout=EVENT_TIMEOUT_SECS)
        assert got_mid == mid
        return codes[0].value

    def publish(self, topic, payload, qos=1, timeout=EVENT_TIMEOUT_SECS):
        info = self.client.publish(topic, payload, qos=qos)
        while True:
            mid, reason = self.acknowledged.get(timeout=timeout)
            if mid == info.mid:
                return reason.value

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def log_has(broker, *parts):
    """Whether a line of the broker's log holds every part, waiting up to EVENT_TIMEOUT_SECS for it."""
    deadline = time.monotonic() + EVENT_TIMEOUT_SECS
    while time.monotonic() < deadline:
        if any(all(part in line for part in parts) for line in list(broker.log)):
            return True
        time.sleep(0.05)
    return False


def connect_v311(port, client_id, username, password):
    """A raw 3.1.1 CONNECT with user name and password; the CONNACK return code."""
    def string(text):
        data = text.encode()
        return struct.pack("!H", len(data)) + data
    variable = string("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 30)
    payload = string(client_id) + string(username) + string(password)
    body = variable + payload
    with socket.create_connection(("127.0.0.1", port), timeout=EVENT_TIMEOUT_SECS) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        connack = recv_up_to(sock, 4)
    assert connack[:2] == b"\x20\x02", connack
    return connack[3]


@unittest.skipIf(os.environ.get("SHARDMQ_TEST_BROKER") == "mosquitto", "shardmq's [auth.http]")
class ExternalAuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = AuthServer()
        url = f"http://127.0.0.1:{cls.server.port}"
        cls.broker = Broker(config_toml=f"""
[auth.http]
authenticate_url = "{url}/auth"
authorize_url = "{url}/acl"
timeout_ms = {TIMEOUT_MS}
cache_ttl_secs = 30
""")

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()
        cls.server.stop()

    def log_has(self, *parts):
        return log_has(self.broker, *parts)

    def test_the_backend_decides_logins_with_v5_and_3_1_1_codes(self):
        alice = Client(self.broker.port, "alice", "pw")
        self.assertIsNone(alice.refused)
        alice.close()
        self.assertEqual(Client(self.broker.port, "alice", "wrong").refused, 0x86, "denied: bad user name or password")
        self.assertEqual(connect_v311(self.broker.port, unique("v3"), "alice", "pw"), 0)
        self.assertEqual(connect_v311(self.broker.port, unique("v3"), "alice", "wrong"), 4)
        sent = [body for path, body in self.server.requests if path == "/auth" and body["password"] == "wrong"]
        self.assertTrue(sent and sent[0]["clientid"] and sent[0]["listener"] == 0, sent)
        self.assertTrue(sent[0]["peer"].startswith("127.0.0.1:"), sent[0])

    def test_a_backend_answering_500_or_garbage_fails_closed_with_a_log_line(self):
        self.assertEqual(Client(self.broker.port, "err", "x").refused, 0x87)
        self.assertEqual(connect_v311(self.broker.port, unique("v3"), "err", "x"), 5)
        self.assertTrue(self.log_has("external auth backend failed", "HTTP status 500", "/auth", "fail closed"))
        self.assertEqual(Client(self.broker.port, "junk", "x").refused, 0x87)
        self.assertEqual(connect_v311(self.broker.port, unique("v3"), "junk", "x"), 5)
        self.assertTrue(self.log_has("external auth backend failed", "not JSON"))

    def test_a_hanging_connect_waits_alone_and_times_out_refused(self):
        results = queue.Queue()
        started = time.monotonic()
        threading.Thread(target=lambda: results.put(Client(self.broker.port, "hang", "x").refused), daemon=True).start()
        time.sleep(0.1)
        subscriber = Client(self.broker.port, "alice", "pw")
        publisher = Client(self.broker.port, "alice", "pw")
        self.assertEqual(subscriber.subscribe("allowed/while-hanging"), 1)
        self.assertEqual(publisher.publish("allowed/while-hanging", b"hi"), 0)
        self.assertEqual(subscriber.messages.get(timeout=EVENT_TIMEOUT_SECS).payload, b"hi")
        self.assertTrue(results.empty(), "the others were served while the hanging CONNECT waited")
        self.assertEqual(results.get(timeout=EVENT_TIMEOUT_SECS), 0x87)
        self.assertGreaterEqual(time.monotonic() - started, TIMEOUT_MS / 1000 * 0.9)
        self.assertTrue(self.log_has("external auth backend failed", f"timed out after {TIMEOUT_MS} ms"))
        subscriber.close()
        publisher.close()

    def test_answers_are_cached_within_the_ttl(self):
        client_id = unique("cached")
        for _ in range(3):
            client = Client(self.broker.port, "alice", "pw", client_id=client_id)
            self.assertIsNone(client.refused)
            client.close()
        self.assertEqual(self.server.count("/auth", clientid=client_id), 1, "asked once, then cached")
        self.assertEqual(Client(self.broker.port, "alice", "other", client_id=client_id).refused, 0x86,
                         "another password is another question")

    def test_publish_and_subscribe_are_authorized_by_the_backend(self):
        client = Client(self.broker.port, "alice", "pw")
        self.assertEqual(client.subscribe("allowed/acl/#"), 1)
        self.assertEqual(client.subscribe("denied/acl/#"), 0x87)
        self.assertEqual(client.subscribe("err/acl/#"), 0x87, "a failing backend refuses (fail closed)")
        self.assertEqual(client.publish("denied/acl/x", b"no"), 0x87)
        self.assertEqual(client.publish("allowed/acl/x", b"yes"), 0)
        self.assertEqual(client.publish("allowed/acl/x", b"again"), 0)
        self.assertEqual(client.messages.get(timeout=EVENT_TIMEOUT_SECS).payload, b"yes")
        self.assertEqual(client.messages.get(timeout=EVENT_TIMEOUT_SECS).payload, b"again")
        self.assertEqual(self.server.count("/acl", topic="allowed/acl/x", action="publish"), 1, "cached")
        acl = [body for path, body in self.server.requests if path == "/acl" and body["topic"] == "denied/acl/#"]
        self.assertEqual((acl[0]["action"], acl[0]["username"]), ("subscribe", "alice"))
        client.close()

    def test_a_held_publish_holds_only_its_client_and_keeps_its_order(self):
        slow = Client(self.broker.port, "alice", "pw")
        other = Client(self.broker.port, "alice", "pw")
        watcher = Client(self.broker.port, "alice", "pw")
        self.assertEqual(watcher.subscribe("allowed/order/#"), 1)
        slow.client.publish("hang/order/1", b"first", qos=1)
        slow.client.publish("allowed/order/2", b"second", qos=1)
        time.sleep(0.2)
        self.assertEqual(other.publish("allowed/order/other", b"meanwhile"), 0)
        self.assertEqual(watcher.messages.get(timeout=EVENT_TIMEOUT_SECS).payload, b"meanwhile")
        # The hanging check times out: the first PUBLISH is refused (fail closed), the second follows it.
        self.assertEqual(watcher.messages.get(timeout=EVENT_TIMEOUT_SECS).payload, b"second")
        self.assertTrue(self.log_has("external auth backend failed", "/acl", "timed out"))
        for client in (slow, other, watcher):
            client.close()


if __name__ == "__main__":
    unittest.main()
