"""paho-mqtt clients over TLS or WebSocket for the transport tests: `TransportClient` (connected, or raises)
and `connect_outcome` (what became of one attempt, for the tests that expect a refusal).
"""

import dataclasses
import queue
import ssl

import paho.mqtt.client as mqtt

from test_paho import EVENT_TIMEOUT_SECS, ReceivingClient, unique
from transport_broker import WEBSOCKET_PATH


def tls_context(ca_cert, cert=None, key=None):
    """A client context that verifies the server against `ca_cert` (and 127.0.0.1 as its name), presenting
    `cert`/`key` when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_cert)
    if cert:
        context.load_cert_chain(cert, key)
    return context


def _paho(protocol, context, websocket, client_id):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or unique("paho-transport"),
                         protocol=protocol, transport="websockets" if websocket else "tcp")
    if websocket:
        client.ws_set_options(path=WEBSOCKET_PATH)
    if context:
        client.tls_set_context(context)
    return client


class TransportClient(ReceivingClient):
    """A connected paho client (TLS when `context` is given, WebSocket when `websocket`), loop in a thread."""

    def __init__(self, port, protocol, context=None, websocket=False, client_id=None, username=None, password=None):
        self.client = _paho(protocol, context, websocket, client_id)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.messages = queue.Queue()
        self.subscribed = queue.Queue()
        connected = queue.Queue()
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_subscribe = lambda _c, _u, mid, codes, _p: self.subscribed.put((mid, codes))
        self.client.on_connect = lambda _c, _u, _f, reason, _p: connected.put(reason)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        reason = connected.get(timeout=EVENT_TIMEOUT_SECS)
        if reason.is_failure:
            raise AssertionError(f"CONNECT refused: {reason}")

    def subscribe(self, topic, qos):
        _, mid = self.client.subscribe(topic, qos)
        got_mid, codes = self.subscribed.get(timeout=EVENT_TIMEOUT_SECS)
        assert got_mid == mid
        return [code.value for code in codes]

    def publish(self, topic, payload, qos=1):
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout=EVENT_TIMEOUT_SECS)
        assert info.is_published(), f"PUBLISH to {topic} not acknowledged"


@dataclasses.dataclass
class Outcome:
    """How one connection attempt ended: "connack" (with `reason`), "handshake" (the TLS handshake raised
    `error`), "closed" (the broker closed the connection before any CONNACK) or "silent" (nothing at all
    within the timeout)."""

    kind: str
    reason: object = None
    error: Exception = None

    @property
    def accepted(self):
        return self.kind == "connack" and not self.reason.is_failure


def connect_outcome(port, protocol, context):
    client = _paho(protocol, context, False, None)
    events = queue.Queue()
    client.on_connect = lambda _c, _u, _f, reason, _p: events.put(Outcome("connack", reason=reason))
    client.on_disconnect = lambda _c, _u, _f, reason, _p: events.put(Outcome("closed", reason=reason))
    try:
        client.connect("127.0.0.1", port, keepalive=30)
    except (ssl.SSLError, OSError) as error:
        return Outcome("handshake", error=error)
    client.loop_start()
    try:
        return events.get(timeout=EVENT_TIMEOUT_SECS)
    except queue.Empty:
        return Outcome("silent")
    finally:
        client.loop_stop()
        try:
            client.socket() and client.socket().close()
        except OSError:
            pass
