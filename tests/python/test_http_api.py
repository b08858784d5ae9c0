"""The HTTP API (`[http]`) against the real broker (2 shards), with paho-mqtt as the MQTT side: publish over
HTTP reaches subscribers (one and batch, v5 properties), every kind of bad request gets its JSON error and
publishes nothing, API tokens work as MQTT credentials with their ACL enforced on publish, subscribe and
delivery, a revoked token disconnects its client with 0x87 and an expired one with 0xA0, tokens survive a
restart, the admin endpoints answer, and every response validates against /api/v1/openapi.json.

Start the broker as test_paho.py does (SHARDMQ_BIN). Skipped on Mosquitto, which has no HTTP API.
"""

import base64
import http.client
import json
import os
import queue
import shutil
import socket
import ssl
import tempfile
import time
import unittest

import paho.mqtt.client as mqtt

from test_paho import Broker, unique, disconnect_all, EVENT_TIMEOUT_SECS
from test_paho_v5 import V5Client
from transport_certs import make_test_pki

import jsonschema  # scripts/test installs it

ADMIN = "admin-token-for-tests-0123456789"
# Operations some test got a validated answer from, and the operations the document lists.
CHECKED, DOCUMENTED = set(), set()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Http:
    """One keep-alive HTTP/1.1 connection; every answer is checked against the OpenAPI document."""

    def __init__(self, port, spec=None, tls=None):
        self.port = port
        self.spec = spec
        if tls is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=EVENT_TIMEOUT_SECS)
        else:
            self.connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=EVENT_TIMEOUT_SECS, context=tls)

    def request(self, method, path, body=None, token=ADMIN, raw=None, headers=None):
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        self.connection.request(method, path, body=data, headers=headers)
        response = self.connection.getresponse()
        text = response.read()
        payload = json.loads(text) if text else None
        if response.getheader("Connection") == "close":
            self.connection.close()
        if self.spec is not None:
            self.spec.check(method, path, response.status, payload)
        return response.status, payload


class OpenApi:
    """The document the broker serves; `check` validates one real response against it."""

    def __init__(self, document):
        self.document = document

    def operation(self, method, path):
        path = path.split("?")[0]
        for template, item in self.document["paths"].items():
            parts, wanted = template.strip("/").split("/"), path.strip("/").split("/")
            greedy = template.endswith("{topic}")
            if len(parts) != len(wanted) and not (greedy and len(wanted) >= len(parts)):
                continue
            if all(p == w or p.startswith("{") for p, w in zip(parts, wanted)):
                return template, item.get(method.lower())
        return None, None

    def check(self, method, path, status, payload):
        template, operation = self.operation(method, path)
        if operation is None:
            assert payload is not None and set(payload) == {"code", "message"}, payload
            return
        response = operation["responses"].get(str(status))
        assert response is not None, f"{method} {template}: status {status} is not in the document"
        if "$ref" in response:
            response = self.document["components"]["responses"][response["$ref"].split("/")[-1]]
        schema = response["content"]["application/json"]["schema"]
        jsonschema.validate(payload, {**schema, "components": self.document["components"]})
        CHECKED.add((method.lower(), template))
        DOCUMENTED.update((verb, path) for path, item in self.document["paths"].items() for verb in item)


class HttpApiTestCase(unittest.TestCase):
    # An ssl.SSLContext: the API is started over TLS (cert_file, key_file) and spoken to through it.
    tls = None

    def setUp(self):
        self.files = tempfile.mkdtemp(prefix="shardmq-http-")
        self.http_port = free_port()
        self.tokens_file = os.path.join(self.files, "tokens.json")
        self.clients = []
        self.start_broker()

    def start_broker(self, extra=""):
        if getattr(self, "api", None) is not None:
            self.api.connection.close()
        self.broker = Broker(config_toml=f"""
[http]
bind = "127.0.0.1:{self.http_port}"
admin_token = "{ADMIN}"
tokens_file = {json.dumps(self.tokens_file)}
body_max_bytes = 4096
request_timeout_secs = 2
{extra}
""")
        if self.broker.kind == "mosquitto":
            self.broker.stop()
            self.skipTest("Mosquitto has no HTTP API")
        self.wait_for_http()
        fetch = Http(self.http_port, tls=self.tls)
        status, document = fetch.request("GET", "/api/v1/openapi.json", token=None)
        fetch.connection.close()
        self.assertEqual(status, 200)
        self.spec = OpenApi(document)
        self.spec.check("GET", "/api/v1/openapi.json", status, document)
        self.api = Http(self.http_port, self.spec, self.tls)

    def wait_for_http(self):
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.http_port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def tearDown(self):
        disconnect_all(self.clients)
        self.api.connection.close()
        self.broker.stop()
        shutil.rmtree(self.files, ignore_errors=True)

    def subscriber(self, topic, **options):
        client = V5Client(self.broker.port, **options)
        self.clients.append(client)
        self.assertEqual(client.subscribe(topic, 1), 1)
        return client

    def token(self, acl, ttl=60):
        status, created = self.api.request("POST", "/api/v1/tokens", {"acl": acl, "ttl_seconds": ttl})
        self.assertEqual(status, 201, created)
        return created

    def token_client(self, token, version=mqtt.MQTTv5, as_password=False):
        """A paho client logged in with the token (as User Name, or as Password); returns (client, reason)."""
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("tok"), protocol=version)
        if as_password:
            client.username_pw_set("anyone", token)
        else:
            client.username_pw_set(token, "")
        events = {"connect": queue.Queue(), "disconnect": queue.Queue(), "message": queue.Queue(),
                  "subscribe": queue.Queue()}
        client.on_connect = lambda _c, _u, _f, reason, _p: events["connect"].put(reason)
        client.on_disconnect = lambda _c, _u, _f, reason, _p: events["disconnect"].put(reason)
        client.on_message = lambda _c, _u, message: events["message"].put(message)
        client.on_subscribe = lambda _c, _u, mid, codes, _p: events["subscribe"].put(codes)
        client.connect("127.0.0.1", self.broker.port, keepalive=30)
        client.loop_start()
        reason = events["connect"].get(timeout=EVENT_TIMEOUT_SECS)
        client.events = events
        client.disconnect_later = lambda: (client.disconnect(), client.loop_stop())
        return client, reason


class PublishTest(HttpApiTestCase):
    def test_a_published_message_reaches_subscribers_with_its_v5_properties(self):
        topic = unique("http/one")
        sub = self.subscriber(topic)
        status, answer = self.api.request("POST", "/api/v1/publish", {
            "topic": topic, "payload": "héllo", "qos": 1, "content_type": "text/plain", "response_topic": "r/1",
            "correlation_data": base64.b64encode(b"id-7").decode(), "message_expiry_interval": 60,
            "user_properties": [{"name": "k", "value": "v"}]})
        self.assertEqual((status, answer), (200, {"matched": True}))
        message = sub.next_message()
        self.assertEqual((message.topic, message.payload, message.qos), (topic, "héllo".encode(), 1))
        self.assertEqual(message.properties.ContentType, "text/plain")
        self.assertEqual(message.properties.ResponseTopic, "r/1")
        self.assertEqual(message.properties.CorrelationData, b"id-7")
        self.assertEqual(message.properties.UserProperty, [("k", "v")])
        status, answer = self.api.request("POST", "/api/v1/publish", {"topic": unique("nobody")})
        self.assertEqual((status, answer), (200, {"matched": False}))

    def test_a_batch_is_routed_in_order_and_binary_payloads_arrive_intact(self):
        topic = unique("http/batch")
        sub = self.subscriber(topic + "/#")
        messages = [{"topic": f"{topic}/{i}", "payload_base64": base64.b64encode(bytes([i, 0, 255])).decode()}
                    for i in range(5)]
        status, answer = self.api.request("POST", "/api/v1/publish/batch", {"messages": messages})
        self.assertEqual(status, 200)
        self.assertEqual(answer, {"results": [{"matched": True}] * 5})
        got = sub.take(5)
        self.assertEqual([(m.topic, m.payload) for m in got], [(f"{topic}/{i}", bytes([i, 0, 255])) for i in range(5)])

    def test_every_bad_request_gets_its_json_error_and_publishes_nothing(self):
        topic = unique("http/bad")
        sub = self.subscriber(topic + "/#")
        good = {"topic": f"{topic}/x", "payload": "x"}
        cases = [
            ("malformed JSON", "POST", "/api/v1/publish", {"raw": b'{"topic": '}, 400),
            ("wrong type", "POST", "/api/v1/publish", {"body": {"topic": f"{topic}/x", "qos": "1"}}, 400),
            ("unknown field", "POST", "/api/v1/publish", {"body": {**good, "colour": "red"}}, 400),
            ("qos 3", "POST", "/api/v1/publish", {"body": {**good, "qos": 3}}, 400),
            ("wildcard topic", "POST", "/api/v1/publish", {"body": {"topic": f"{topic}/+"}}, 400),
            ("no token", "POST", "/api/v1/publish", {"body": good, "token": None}, 401),
            ("bad token", "POST", "/api/v1/publish", {"body": good, "token": "smqt_nope"}, 401),
            ("wrong method", "GET", "/api/v1/publish", {}, 405),
            ("unknown path", "GET", "/api/v1/nothing", {}, 404),
            ("one bad message spoils the batch", "POST", "/api/v1/publish/batch",
             {"body": {"messages": [good, {"topic": f"{topic}/#"}]}}, 400),
            ("oversize body", "POST", "/api/v1/publish", {"body": {**good, "payload": "x" * 5000}}, 413),
        ]
        for name, method, path, options, expected in cases:
            with self.subTest(name):
                status, answer = self.api.request(method, path, **options)
                self.assertEqual(status, expected, answer)
                self.assertEqual(set(answer), {"code", "message"}, answer)
                self.assertEqual(answer["code"], expected)
        sub.assert_no_message()

    def test_a_token_may_publish_only_where_its_acl_allows(self):
        topic = unique("http/acl")
        sub = self.subscriber(topic + "/#")
        token = self.token([{"filter": f"{topic}/mine/#", "actions": ["publish"]}])["token"]
        status, _ = self.api.request("POST", "/api/v1/publish", {"topic": f"{topic}/mine/a", "payload": "ok"},
                                     token=token)
        self.assertEqual(status, 200)
        self.assertEqual(sub.next_message().topic, f"{topic}/mine/a")
        status, answer = self.api.request("POST", "/api/v1/publish", {"topic": f"{topic}/other", "payload": "no"},
                                          token=token)
        self.assertEqual(status, 403, answer)
        status, _ = self.api.request("GET", "/api/v1/clients", token=token)
        self.assertEqual(status, 403, "an API token is not the admin token")
        sub.assert_no_message()

    def test_a_validation_rule_refuses_an_api_publish_naming_the_rule(self):
        self.broker.stop()
        self.start_broker(extra='[[validation]]\nname = "small"\nfilter = "limited/#"\nmax_payload_bytes = 4\n')
        sub = self.subscriber("limited/#")
        status, answer = self.api.request("POST", "/api/v1/publish", {"topic": "limited/a", "payload": "too long"})
        self.assertEqual(status, 400)
        self.assertIn("small", answer["message"])
        sub.assert_no_message()


class TokenTest(HttpApiTestCase):
    def test_a_token_is_mqtt_credentials_with_its_acl_on_subscribe_and_delivery(self):
        user = unique("alice")
        created = self.token([{"filter": f"notify/{user}/#", "actions": ["subscribe"]}])
        for as_password in (False, True):
            client, reason = self.token_client(created["token"], as_password=as_password)
            self.assertFalse(reason.is_failure, reason)
            client.subscribe(f"notify/{user}/#", 1)
            self.assertEqual(client.events["subscribe"].get(timeout=EVENT_TIMEOUT_SECS)[0].value, 1)
            client.subscribe("notify/bob/#", 1)
            self.assertEqual(client.events["subscribe"].get(timeout=EVENT_TIMEOUT_SECS)[0].value, 0x87)
            client.subscribe("notify/#", 1)
            self.assertEqual(client.events["subscribe"].get(timeout=EVENT_TIMEOUT_SECS)[0].value, 0x87,
                             "a filter wider than the ACL is refused, not filtered")
            self.api.request("POST", "/api/v1/publish", {"topic": f"notify/{user}/1", "payload": "for you"})
            message = client.events["message"].get(timeout=EVENT_TIMEOUT_SECS)
            self.assertEqual(message.payload, b"for you")
            client.publish(f"notify/{user}/1", "may not publish", qos=1)
            with self.assertRaises(queue.Empty):
                client.events["message"].get(timeout=0.5)
            client.disconnect_later()
        client, reason = self.token_client("smqt_made-up")
        self.assertTrue(reason.is_failure)
        self.assertEqual(reason.value, 0x86)
        client.loop_stop()

    def test_a_revoked_token_disconnects_its_clients_with_0x87_and_is_refused_after(self):
        created = self.token([{"filter": "x/#", "actions": ["subscribe"]}])
        client, reason = self.token_client(created["token"])
        self.assertFalse(reason.is_failure)
        old, _ = self.token_client(created["token"], version=mqtt.MQTTv311)
        status, answer = self.api.request("DELETE", f"/api/v1/tokens/{created['id']}")
        self.assertEqual((status, answer), (200, {"id": created["id"], "disconnected": 2}))
        self.assertEqual(client.events["disconnect"].get(timeout=EVENT_TIMEOUT_SECS).value, 0x87)
        old.events["disconnect"].get(timeout=EVENT_TIMEOUT_SECS)
        again, reason = self.token_client(created["token"])
        self.assertTrue(reason.is_failure)
        again.loop_stop()
        status, _ = self.api.request("DELETE", f"/api/v1/tokens/{created['id']}")
        self.assertEqual(status, 404)

    def test_an_expired_token_disconnects_its_clients_with_0xa0(self):
        created = self.token([{"filter": "y/#", "actions": ["subscribe"]}], ttl=2)
        client, reason = self.token_client(created["token"])
        self.assertFalse(reason.is_failure)
        self.assertEqual(client.events["disconnect"].get(timeout=EVENT_TIMEOUT_SECS).value, 0xA0)
        status, listed = self.api.request("GET", "/api/v1/tokens")
        self.assertEqual((status, listed), (200, {"tokens": []}))

    def test_tokens_survive_a_restart_stored_hashed(self):
        created = self.token([{"filter": "z/#", "actions": ["publish", "subscribe"]}], ttl=3600)
        with open(self.tokens_file) as stored:
            text = stored.read()
        self.assertNotIn(created["token"], text)
        self.assertNotIn(created["token"][len("smqt_"):], text)
        self.broker.stop()
        self.start_broker()
        client, reason = self.token_client(created["token"])
        self.assertFalse(reason.is_failure, reason)
        client.disconnect_later()
        status, listed = self.api.request("GET", "/api/v1/tokens")
        self.assertEqual([token["id"] for token in listed["tokens"]], [created["id"]])

    def test_bad_token_requests_are_refused(self):
        for body in ({"acl": [], "ttl_seconds": 5}, {"acl": [{"filter": "a/#/b", "actions": ["publish"]}], "ttl_seconds": 5},
                     {"acl": [{"filter": "a", "actions": ["fly"]}], "ttl_seconds": 5},
                     {"acl": [{"filter": "a", "actions": ["publish"]}], "ttl_seconds": 0}):
            status, answer = self.api.request("POST", "/api/v1/tokens", body)
            self.assertEqual(status, 400, (body, answer))
        self.assertEqual(self.api.request("GET", "/api/v1/tokens")[1], {"tokens": []})


class AdminTest(HttpApiTestCase):
    def test_clients_sessions_kick_retained_and_stats(self):
        topic = unique("adm")
        sub = self.subscriber(topic + "/#", client_id=unique("watcher"))
        client_id = sub.client._client_id.decode()
        status, listed = self.api.request("GET", "/api/v1/clients")
        self.assertEqual(status, 200)
        mine = [client for client in listed["items"] if client["client_id"] == client_id]
        self.assertEqual(len(mine), 1)
        self.assertEqual((mine[0]["protocol_version"], mine[0]["subscriptions"]), ("5.0", [topic + "/#"]))
        # The peer address is the client's end of its socket, as the client itself sees it.
        address = "127.0.0.1:%d" % sub.client.socket().getsockname()[1]
        self.assertEqual(mine[0]["address"], address)
        status, one = self.api.request("GET", f"/api/v1/clients/{client_id}")
        self.assertEqual((status, one["client_id"], one["address"]), (200, client_id, address))
        self.assertEqual(self.api.request("GET", "/api/v1/clients/nobody-here")[0], 404)
        status, sessions = self.api.request("GET", "/api/v1/sessions")
        self.assertIn(client_id, [session["client_id"] for session in sessions["items"]])

        self.api.request("POST", "/api/v1/publish", {"topic": f"{topic}/kept", "payload": "r", "retain": True})
        self.assertEqual(sub.next_message().payload, b"r")
        status, retained = self.api.request("GET", f"/api/v1/retained?filter={topic}/%23")
        self.assertEqual([item["topic"] for item in retained["items"]], [f"{topic}/kept"])
        status, deleted = self.api.request("DELETE", f"/api/v1/retained/{topic}/kept")
        self.assertEqual((status, deleted), (200, {"topic": f"{topic}/kept", "deleted": True}))
        sub.assert_no_message()
        self.assertEqual(self.api.request("GET", f"/api/v1/retained?filter={topic}/%23")[1]["items"], [])
        self.assertEqual(self.api.request("DELETE", f"/api/v1/retained/{topic}/kept")[0], 404)

        status, stats = self.api.request("GET", "/api/v1/stats")
        self.assertEqual((status, len(stats["shards"])), (200, 2))
        self.assertGreaterEqual(stats["connections"], 1)

        status, kicked = self.api.request("DELETE", f"/api/v1/clients/{client_id}")
        self.assertEqual((status, kicked), (200, {"client_id": client_id, "kicked": True}))
        self.assertEqual(sub.server_disconnect_reason(), 0x98)
        self.assertEqual(self.api.request("DELETE", f"/api/v1/clients/{client_id}")[0], 404)

    def test_keep_alive_serves_many_requests_on_one_connection_and_a_slow_request_times_out(self):
        for _ in range(20):
            self.assertEqual(self.api.request("GET", "/api/v1/stats")[0], 200)
        with socket.create_connection(("127.0.0.1", self.http_port)) as slow:
            slow.sendall(b"POST /api/v1/publish HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
            slow.settimeout(15)
            answer = slow.recv(4096)
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer)


class WithTestPki:
    """A test CA and server certificate (transport_certs) for the class; `trusting` verifies against it."""

    @classmethod
    def setUpClass(cls):
        cls.pki_dir = tempfile.TemporaryDirectory(prefix="shardmq-pki-")
        cls.pki = make_test_pki(cls.pki_dir.name)
        cls.trusting = ssl.create_default_context(cafile=cls.pki.ca_cert)

    @classmethod
    def tearDownClass(cls):
        cls.pki_dir.cleanup()


class HttpsTest(WithTestPki, HttpApiTestCase):
    """`[http] cert_file` / `key_file`: the API speaks only TLS, with a certificate python's ssl verifies
    against the test CA (transport_certs), and serves the same requests over it."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tls = cls.trusting

    def start_broker(self, extra=""):
        super().start_broker(f"cert_file = {json.dumps(self.pki.server_cert)}\n"
                             f"key_file = {json.dumps(self.pki.server_key)}\n{extra}")

    def test_publish_and_tokens_over_tls_on_one_keep_alive_connection(self):
        topic = unique("https/one")
        sub = self.subscriber(topic)
        self.assertEqual(self.api.request("POST", "/api/v1/publish", {"topic": topic, "payload": "over tls"}),
                         (200, {"matched": True}))
        self.assertEqual(sub.next_message().payload, b"over tls")
        created = self.token([{"filter": f"{topic}/#", "actions": ["subscribe"]}])
        status, listed = self.api.request("GET", "/api/v1/tokens")
        self.assertEqual(status, 200)
        self.assertEqual([token["id"] for token in listed["tokens"]], [created["id"]])
        self.assertEqual(self.api.connection.sock.version(), "TLSv1.3")

    def test_plain_http_and_an_untrusted_client_get_no_answer(self):
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=EVENT_TIMEOUT_SECS) as plain:
            plain.sendall(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = plain.recv(4096)
        self.assertFalse(answer.startswith(b"HTTP/"), answer)  # a TLS alert, or nothing, never HTTP
        untrusting = Http(self.http_port, tls=ssl.create_default_context(cafile=self.pki.other_ca_cert))
        with self.assertRaises(ssl.SSLCertVerificationError):
            untrusting.request("GET", "/api/v1/openapi.json", token=None)
        untrusting.connection.close()


class TwoListenersTest(WithTestPki, HttpApiTestCase):
    """`[http] bind` (plain) and one `[[http.listeners]]` entry with its own certificate (HTTPS): both serve
    the same API, so a token made over one works over the other and as MQTT credentials."""

    def start_broker(self, extra=""):
        self.https_port = free_port()
        super().start_broker(f"{extra}\n[[http.listeners]]\nbind = \"127.0.0.1:{self.https_port}\"\n"
                             f"cert_file = {json.dumps(self.pki.server_cert)}\n"
                             f"key_file = {json.dumps(self.pki.server_key)}\n")

    def test_a_token_made_over_https_publishes_over_plain_http(self):
        secure = Http(self.https_port, self.spec, self.trusting)
        topic = unique("two/listeners")
        sub = self.subscriber(topic)
        status, created = secure.request("POST", "/api/v1/tokens",
                                         {"acl": [{"filter": topic, "actions": ["publish"]}], "ttl_seconds": 60})
        self.assertEqual(status, 201, created)
        self.assertEqual(secure.connection.sock.version(), "TLSv1.3")
        secure.connection.close()
        self.assertEqual(self.api.request("POST", "/api/v1/publish", {"topic": topic, "payload": "plain"},
                                          token=created["token"]), (200, {"matched": True}))
        self.assertEqual(sub.next_message().payload, b"plain")

    def test_each_listener_speaks_only_its_own_scheme(self):
        with socket.create_connection(("127.0.0.1", self.https_port), timeout=EVENT_TIMEOUT_SECS) as plain:
            plain.sendall(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertFalse(plain.recv(4096).startswith(b"HTTP/"))
        status, _ = self.api.request("GET", "/api/v1/openapi.json", token=None)
        self.assertEqual(status, 200)


class ZzOpenApiCoverageTest(unittest.TestCase):
    """Named to run after the other classes of this module (unittest loads them in name order)."""

    def test_zz_every_documented_operation_answered_and_validated(self):
        if not CHECKED:
            self.skipTest("run with the other tests of this module")
        missing = DOCUMENTED - CHECKED
        self.assertFalse(missing, f"operations no test validated: {sorted(missing)}")


if __name__ == "__main__":
    unittest.main()
