"""MQTT 5 features with paho-mqtt (MQTTv5) and mosquitto_pub / mosquitto_sub -V mqttv5, clients nobody
here wrote, against the real broker with 2 shards. Client ids are chosen by their home shard (FNV-1a of the
id, as the broker places them), so publishers and subscribers sit on different shards where it matters.

Test names end in the spec clause they check. Start the broker as test_paho.py does (SHARDMQ_BIN).
"""

import itertools
import queue
import subprocess
import time
import unittest

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from test_paho import EVENT_TIMEOUT_SECS, SILENCE_SECS, Broker, BrokerTestCase, Client, ReceivingClient, unique

SHARDS = 2


def home_shard(client_id):
    """The broker's placement: FNV-1a 64 of the client id, modulo the shard count."""
    value = 0xCBF29CE484222325
    for byte in client_id.encode():
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value % SHARDS


def id_on_shard(prefix, shard):
    base = unique(prefix)
    return next(f"{base}-{n}" for n in itertools.count() if home_shard(f"{base}-{n}") == shard)


def properties(packet_type, **values):
    props = Properties(packet_type)
    for name, value in values.items():
        setattr(props, name, value)
    return props


class V5Client(ReceivingClient):
    """A paho MQTTv5 client with its network loop in a thread; what the broker sends goes to queues.
    It never reconnects on its own, so a server DISCONNECT stays visible."""

    def __init__(self, port, client_id=None, clean_start=True, connect_properties=None, will=None,
                 manual_ack=False):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=unique("v5") if client_id is None else client_id,
                                  reconnect_on_failure=False, manual_ack=manual_ack)
        self.messages = queue.Queue()
        self.subscribed = queue.Queue()
        self.acknowledged = queue.Queue()
        self.disconnected = queue.Queue()
        connected = queue.Queue()
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_subscribe = lambda _c, _u, mid, codes, _p: self.subscribed.put((mid, codes))
        self.client.on_publish = lambda _c, _u, mid, reason, props: self.acknowledged.put((mid, reason, props))
        self.client.on_disconnect = lambda _c, _u, _f, reason, _p: self.disconnected.put(reason)
        self.client.on_connect = lambda _c, _u, flags, reason, props: connected.put((flags, reason, props))
        if will:
            self.client.will_set(**will)
        self.client.connect("127.0.0.1", port, keepalive=30, clean_start=clean_start,
                            properties=connect_properties)
        self.client.loop_start()
        flags, reason, self.connack = connected.get(timeout=EVENT_TIMEOUT_SECS)
        if reason.is_failure:
            raise AssertionError(f"CONNECT refused: {reason}")
        self.session_present = flags.session_present

    def subscribe(self, topic, qos=1, options=None, subscribe_properties=None):
        """Subscribes to one filter; returns the SUBACK reason code value."""
        options = options or SubscribeOptions(qos=qos)
        _, mid = self.client.subscribe(topic, options=options, properties=subscribe_properties)
        got_mid, codes = self.subscribed.get(timeout=EVENT_TIMEOUT_SECS)
        assert got_mid == mid
        return codes[0].value

    def publish(self, topic, payload, qos=1, retain=False, publish_properties=None):
        """Publishes; returns the PUBACK / PUBREC reason code value (0 for QoS 0 once written)."""
        return self.publish_acknowledged(topic, payload, qos, retain, publish_properties)[0]

    def publish_acknowledged(self, topic, payload, qos=1, retain=False, publish_properties=None):
        """Publishes; returns the reason code value and the properties of the PUBACK / PUBREC."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=publish_properties)
        while True:
            mid, reason, props = self.acknowledged.get(timeout=EVENT_TIMEOUT_SECS)
            if mid == info.mid:
                return reason.value, props

    def take(self, count):
        """The next `count` messages, then nothing more for a while."""
        received = [self.next_message() for _ in range(count)]
        self.assert_no_message()
        return received

    def server_disconnect_reason(self):
        return self.disconnected.get(timeout=EVENT_TIMEOUT_SECS).value


class V5TestCase(BrokerTestCase):
    def v5(self, **options):
        client = V5Client(self.broker.port, **options)
        self.clients.append(client)
        return client

    def v311(self, client_id=None):
        client = Client(self.broker.port, mqtt.MQTTv311, client_id=client_id)
        self.clients.append(client)
        return client

    def skip_on_mosquitto(self, why):
        if self.broker.kind == "mosquitto":
            self.skipTest(f"Mosquitto: {why}")


class PahoV5Test(V5TestCase):
    def test_shared_subscription_one_member_per_message_across_shards__mqtt_4_8_2(self):
        topic = unique("paho5/shared")
        group = f"$share/workers/{topic}"
        members = []
        for shard, version in [(0, 5), (1, 5), (0, 3), (1, 3)]:
            client_id = id_on_shard("member", shard)
            member = self.v5(client_id=client_id) if version == 5 else self.v311(client_id)
            self.assertEqual(member.subscribe(group, 1), [1] if version == 3 else 1)
            members.append(member)
        for shard in range(SHARDS):
            publisher = self.v5(client_id=id_on_shard("publisher", shard))
            for i in range(20):
                publisher.publish(topic, f"{shard}-{i}", qos=1)
        per_member = [[] for _ in members]
        deadline = time.monotonic() + EVENT_TIMEOUT_SECS
        while sum(map(len, per_member)) < 40 and time.monotonic() < deadline:
            for got, member in zip(per_member, members):
                try:
                    got.append(member.messages.get(timeout=0.05).payload.decode())
                except queue.Empty:
                    pass
        for member in members:
            member.assert_no_message()
        everything = sorted(itertools.chain.from_iterable(per_member))
        self.assertEqual(everything, sorted(f"{s}-{i}" for s in range(SHARDS) for i in range(20)),
                         f"each message to exactly one member: {per_member}")
        self.assertGreaterEqual(sum(1 for got in per_member if got), 2, f"shared among members: {per_member}")

    def test_topic_alias_from_client_and_alias_over_maximum_0x94__mqtt_3_3_2_8(self):
        first, second = unique("paho5/alias-a"), unique("paho5/alias-b")
        subscriber = self.v5(client_id=id_on_shard("sub", 1))
        subscriber.subscribe(first, 1)
        subscriber.subscribe(second, 1)
        publisher = self.v5(client_id=id_on_shard("pub", 0))
        maximum = publisher.connack.TopicAliasMaximum
        self.assertGreater(maximum, 0, "the broker accepts topic aliases")
        alias = lambda n: properties(PacketTypes.PUBLISH, TopicAlias=n)
        publisher.publish(first, "sets alias 1", publish_properties=alias(1))
        publisher.publish("", "uses alias 1", publish_properties=alias(1))
        publisher.publish(second, "moves alias 1", publish_properties=alias(1))
        publisher.publish("", "uses moved alias 1", publish_properties=alias(1))
        got = [(m.topic, m.payload.decode()) for m in (subscriber.next_message() for _ in range(4))]
        self.assertEqual(got, [(first, "sets alias 1"), (first, "uses alias 1"),
                               (second, "moves alias 1"), (second, "uses moved alias 1")])
        publisher.client.publish(first, "alias over maximum", qos=0, properties=alias(maximum + 1))
        self.assertEqual(publisher.server_disconnect_reason(), 0x94, "Topic Alias invalid")
        subscriber.assert_no_message()

    def test_subscription_identifiers_one_per_matching_subscription__mqtt_3_3_4_6(self):
        root = unique("paho5/subid")
        subscriber = self.v5(client_id=id_on_shard("sub", 0))
        with_id = lambda n: properties(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=n)
        subscriber.subscribe(f"{root}/a/+", 1, subscribe_properties=with_id(7))
        subscriber.subscribe(f"{root}/#", 1, subscribe_properties=with_id(300))
        publisher = self.v5(client_id=id_on_shard("pub", 1))
        publisher.publish(f"{root}/b", "one match")
        self.assertEqual(subscriber.next_message().properties.SubscriptionIdentifier, [300])
        publisher.publish(f"{root}/a/x", "two matches")
        ids = list(subscriber.next_message().properties.SubscriptionIdentifier)
        if len(ids) == 1:
            ids += subscriber.next_message().properties.SubscriptionIdentifier
        subscriber.assert_no_message()
        self.assertEqual(sorted(ids), [7, 300], "both identifiers, on one copy or one per subscription")

    def test_no_local_skips_own_messages_only__mqtt_3_8_3_3(self):
        topic = unique("paho5/nolocal")
        client = self.v5(client_id=id_on_shard("self", 0))
        client.subscribe(topic, options=SubscribeOptions(qos=1, noLocal=True))
        client.publish(topic, "own")
        self.v5(client_id=id_on_shard("other", 1)).publish(topic, "other")
        self.assertEqual([m.payload for m in client.take(1)], [b"other"])

    def test_retain_handling_and_retain_as_published__mqtt_3_3_1_9_to_12(self):
        topic = unique("paho5/retain")
        publisher = self.v5(client_id=id_on_shard("pub", 0))
        publisher.publish(topic, "stored", retain=True)

        def retained_on_subscribe(client, handling, expected):
            client.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=handling))
            return [m.payload for m in client.take(len(expected))]

        subscriber = self.v5(client_id=id_on_shard("sub", 1))
        for client, handling, expected, rule in [
            (subscriber, 0, [b"stored"], "0: sent at subscribe"),
            (subscriber, 0, [b"stored"], "0: at every subscribe"),
            (subscriber, 1, [], "1: not for an existing subscription"),
            (self.v5(), 1, [b"stored"], "1: for a new one"),
            (self.v5(), 2, [], "2: never"),
        ]:
            self.assertEqual(retained_on_subscribe(client, handling, expected), expected, rule)

        keeps = self.v5(client_id=id_on_shard("keeps", 1))
        keeps.subscribe(topic, options=SubscribeOptions(qos=1, retainAsPublished=True, retainHandling=2))
        publisher.publish(topic, "live", retain=True)
        self.assertTrue(keeps.next_message().retain, "Retain As Published keeps the flag")
        self.assertFalse(subscriber.next_message().retain, "without it a live message has retain 0")

    def test_client_receive_maximum_bounds_unacknowledged_deliveries__mqtt_3_3_4_9(self):
        self.skip_on_mosquitto("2.0.11 had 3 unacknowledged PUBLISHes out after the first acks")
        topic = unique("paho5/receive-max")
        subscriber = self.v5(client_id=id_on_shard("slow", 1), manual_ack=True,
                             connect_properties=properties(PacketTypes.CONNECT, ReceiveMaximum=2))
        subscriber.subscribe(topic, 1)
        publisher = self.v5(client_id=id_on_shard("pub", 0))
        for i in range(5):
            publisher.publish(topic, f"m{i}")
        first = subscriber.take(2)
        self.assertEqual([m.payload for m in first], [b"m0", b"m1"], "two in flight, the rest wait")
        for message in first:
            subscriber.client.ack(message.mid, message.qos)
        rest = subscriber.take(2)
        self.assertEqual([m.payload for m in rest], [b"m2", b"m3"])
        for message in rest:
            subscriber.client.ack(message.mid, message.qos)
        self.assertEqual([m.payload for m in subscriber.take(1)], [b"m4"])

    def test_payload_format_indicator_utf8_forwarded_invalid_refused_0x99__mqtt_3_3_2_4(self):
        self.skip_on_mosquitto("2.0.11 does not check payloads marked UTF-8")
        topic = unique("paho5/pfi")
        subscriber = self.v5(client_id=id_on_shard("sub", 1))
        subscriber.subscribe(topic, 1)
        publisher = self.v5(client_id=id_on_shard("pub", 0))
        text = properties(PacketTypes.PUBLISH, PayloadFormatIndicator=1, ContentType="text/plain")
        self.assertEqual(publisher.publish(topic, "grüße".encode(), publish_properties=text), 0)
        message = subscriber.next_message()
        self.assertEqual((message.payload.decode(), message.properties.PayloadFormatIndicator,
                          message.properties.ContentType), ("grüße", 1, "text/plain"))
        reason, puback = publisher.publish_acknowledged(topic, b"\xff\xfe", publish_properties=text)
        self.assertEqual(reason, 0x99)
        self.assertIn("UTF-8", puback.ReasonString, "the Reason String says why")
        subscriber.assert_no_message()

    def test_session_resumes_with_queued_messages_and_message_expiry__mqtt_3_1_2_23_and_3_3_2_5(self):
        topic = unique("paho5/offline")
        persistent_id, short_id = id_on_shard("persistent", 1), id_on_shard("short", 0)
        expiring = lambda secs: properties(PacketTypes.CONNECT, SessionExpiryInterval=secs)
        persistent = self.v5(client_id=persistent_id, clean_start=False, connect_properties=expiring(60))
        persistent.subscribe(topic, 1)
        persistent.disconnect()
        short = self.v5(client_id=short_id, clean_start=False, connect_properties=expiring(1))
        short.subscribe(topic, 1)
        short.disconnect()
        publisher = self.v5(client_id=id_on_shard("pub", 0))
        message_expiry = lambda secs: properties(PacketTypes.PUBLISH, MessageExpiryInterval=secs)
        publisher.publish(topic, "kept")
        publisher.publish(topic, "expires", publish_properties=message_expiry(1))
        publisher.publish(topic, "long-lived", publish_properties=message_expiry(100))
        time.sleep(1.6)
        back = self.v5(client_id=persistent_id, clean_start=False, connect_properties=expiring(60))
        self.assertTrue(back.session_present)
        received = back.take(2)
        self.assertEqual([m.payload for m in received], [b"kept", b"long-lived"], "the expired one is dropped")
        remaining = received[1].properties.MessageExpiryInterval
        self.assertTrue(95 <= remaining < 100, f"remaining expiry forwarded, got {remaining}")
        late = self.v5(client_id=short_id, clean_start=False, connect_properties=expiring(1))
        self.assertFalse(late.session_present, "a session past its expiry interval is gone")
        late.assert_no_message()

    def test_will_delay_postpones_will_and_reconnect_cancels_it__mqtt_3_1_3_9(self):
        self.skip_on_mosquitto("2.0.11 counts will delays in whole seconds of its clock (sent after 0.4 s here)")
        delayed_topic, cancelled_topic = unique("paho5/will-delayed"), unique("paho5/will-cancelled")
        watcher = self.v5(client_id=id_on_shard("watch", 0))
        watcher.subscribe(delayed_topic, 1)
        watcher.subscribe(cancelled_topic, 1)
        session = properties(PacketTypes.CONNECT, SessionExpiryInterval=30)
        will = lambda topic: {"topic": topic, "payload": "gone", "qos": 1,
                              "properties": properties(PacketTypes.WILLMESSAGE, WillDelayInterval=1)}
        stays_id = id_on_shard("returns", 0)
        leaves = self.v5(client_id=id_on_shard("leaves", 1), clean_start=False, connect_properties=session,
                         will=will(delayed_topic))
        returns = self.v5(client_id=stays_id, clean_start=False, connect_properties=session,
                          will=will(cancelled_topic))
        # Timed from the leaving client's own close: drop_connection first stops paho's network thread, which
        # can take up to its 1 s select timeout, so the second drop may end about when the first will is due.
        leaves.drop_connection()
        dropped_at = time.monotonic()
        returns.drop_connection()
        back = self.v5(client_id=stays_id, clean_start=False, connect_properties=session)
        self.assertTrue(back.session_present)
        message = watcher.next_message()
        waited = time.monotonic() - dropped_at
        self.assertEqual(message.topic, delayed_topic)
        self.assertGreaterEqual(waited, 0.9, "the will waits for its delay")
        watcher.assert_no_message(wait_secs=0.5)

    def test_assigned_client_identifier_resumes_its_session__mqtt_3_2_2_16(self):
        session = properties(PacketTypes.CONNECT, SessionExpiryInterval=60)
        anonymous = self.v5(client_id="", clean_start=False, connect_properties=session)
        assigned = anonymous.connack.AssignedClientIdentifier
        self.assertTrue(assigned, "an empty client id gets an Assigned Client Identifier")
        topic = unique("paho5/assigned")
        anonymous.subscribe(topic, 1)
        anonymous.disconnect()
        self.v5(client_id=id_on_shard("pub", 1)).publish(topic, "while away")
        back = self.v5(client_id=assigned, clean_start=False, connect_properties=session)
        self.assertTrue(back.session_present, "the assigned id names the session")
        self.assertEqual(back.next_message().payload, b"while away")
        other = self.v5(client_id="")
        self.assertNotEqual(other.connack.AssignedClientIdentifier, assigned, "ids are unique")

    def test_v311_and_v5_interoperate_v5_properties_dropped__mqtt_3_3_2(self):
        topic = unique("paho5/interop")
        v5_side = self.v5(client_id=id_on_shard("v5", 0))
        v311_side = self.v311(id_on_shard("v311", 1))
        self.assertEqual(v5_side.subscribe(topic, 2), 2)
        self.assertEqual(v311_side.subscribe(topic, 2), [2])
        with_properties = properties(PacketTypes.PUBLISH, UserProperty=[("k", "v")], ResponseTopic="r/t",
                                     CorrelationData=b"c", ContentType="text/plain", PayloadFormatIndicator=1)
        v5_side.publish(topic, "from v5", qos=2, publish_properties=with_properties)
        v311_side.publish(topic, "from v311", qos=2)
        for_v311 = [(m.payload, m.qos) for m in (v311_side.next_message(), v311_side.next_message())]
        self.assertEqual(sorted(for_v311), [(b"from v311", 2), (b"from v5", 2)], "exact payloads, no property bytes")
        for_v5 = {m.payload: m for m in v5_side.take(2)}
        self.assertEqual(set(for_v5), {b"from v5", b"from v311"})
        self.assertEqual(for_v5[b"from v5"].properties.UserProperty, [("k", "v")])
        self.assertFalse(hasattr(for_v5[b"from v311"].properties, "UserProperty"), "a 3.1.1 message has none")


class PahoV5RequestResponseTest(V5TestCase):
    mqtt_toml = 'response_information_prefix = "replies/"'

    def test_request_response_with_response_information__mqtt_3_3_2_15_to_18(self):
        self.skip_on_mosquitto("no Response Information")
        requester = self.v5(client_id=id_on_shard("requester", 0),
                            connect_properties=properties(PacketTypes.CONNECT, RequestResponseInformation=1))
        response_base = requester.connack.ResponseInformation
        self.assertEqual(response_base, f"replies/{requester.client._client_id.decode()}")
        plain = self.v5(client_id=id_on_shard("plain", 1))
        self.assertFalse(hasattr(plain.connack, "ResponseInformation"), "only when requested")

        service = unique("paho5/service")
        responder = self.v5(client_id=id_on_shard("responder", 1))
        responder.subscribe(service, 1)
        requester.subscribe(f"{response_base}/#", 1)
        user = [("b", "2"), ("a", "1"), ("b", "3")]
        request = properties(PacketTypes.PUBLISH, ResponseTopic=f"{response_base}/answer",
                             CorrelationData=b"\x00\x01req-1", UserProperty=user)
        requester.publish(service, "question", publish_properties=request)
        got = responder.next_message()
        self.assertEqual(got.properties.ResponseTopic, f"{response_base}/answer")
        self.assertEqual(got.properties.CorrelationData, b"\x00\x01req-1")
        self.assertEqual(got.properties.UserProperty, user, "same pairs in the same order [MQTT-3.3.2-18]")
        reply = properties(PacketTypes.PUBLISH, CorrelationData=got.properties.CorrelationData)
        responder.publish(got.properties.ResponseTopic, "answer", publish_properties=reply)
        answer = requester.next_message()
        self.assertEqual((answer.topic, answer.payload, answer.properties.CorrelationData),
                         (f"{response_base}/answer", b"answer", b"\x00\x01req-1"))


class PahoV5RedirectTest(V5TestCase):
    mqtt_toml = 'server_reference = "other.example:1883"'

    def test_configured_redirect_refuses_with_0x9c_and_server_reference__mqtt_4_11(self):
        self.skip_on_mosquitto("no redirect")
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, client_id=unique("moved"),
                             reconnect_on_failure=False)
        connacks = queue.Queue()
        client.on_connect = lambda _c, _u, _f, reason, props: connacks.put((reason.value, props))
        client.connect("127.0.0.1", self.broker.port, keepalive=30)
        client.loop_start()
        try:
            reason, connack = connacks.get(timeout=EVENT_TIMEOUT_SECS)
        finally:
            client.loop_stop()
        self.assertEqual(reason, 0x9C, "Use another server")
        self.assertEqual(connack.ServerReference, "other.example:1883")


class PahoV5QuietTest(V5TestCase):
    mqtt_toml = "reason_strings = false"

    def test_reason_strings_off_in_config__mqtt_3_4_2_2_2(self):
        self.skip_on_mosquitto("the switch is shardmq's")
        publisher = self.v5()
        text = properties(PacketTypes.PUBLISH, PayloadFormatIndicator=1)
        reason, puback = publisher.publish_acknowledged(unique("paho5/quiet"), b"\xff", publish_properties=text)
        self.assertEqual(reason, 0x99)
        self.assertFalse(hasattr(puback, "ReasonString"), "no Reason String when turned off")


class MosquittoV5CommandLineTest(unittest.TestCase):
    """mosquitto_pub / mosquitto_sub -V mqttv5 with properties given by -D."""

    def setUp(self):
        self.broker = Broker()

    def tearDown(self):
        self.broker.stop()

    def base(self, tool):
        return [tool, "-V", "mqttv5", "-h", "127.0.0.1", "-p", str(self.broker.port)]

    def subscribe_then_publish(self, sub_args, pub_args):
        """Starts mosquitto_sub for one message and publishes until it has it; returns its output."""
        subscriber = subprocess.Popen(self.base("mosquitto_sub") + ["-C", "1", "-W", str(EVENT_TIMEOUT_SECS),
                                                                   *sub_args],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + EVENT_TIMEOUT_SECS
        while subscriber.poll() is None and time.monotonic() < deadline:
            subprocess.run(self.base("mosquitto_pub") + pub_args, check=True, timeout=EVENT_TIMEOUT_SECS,
                           capture_output=True)
            time.sleep(0.1)
        out, err = subscriber.communicate(timeout=EVENT_TIMEOUT_SECS)
        self.assertEqual(subscriber.returncode, 0, err)
        return out

    def test_publish_properties_reach_a_v5_subscriber__mqtt_3_3_2(self):
        topic = unique("cli5/properties")
        out = self.subscribe_then_publish(
            ["-t", topic, "-q", "1", "-F", "%t|%p|%R|%C|%D|%P"],
            ["-t", topic, "-q", "1", "-m", "hello",
             "-D", "publish", "response-topic", "reply/here",
             "-D", "publish", "content-type", "text/plain",
             "-D", "publish", "correlation-data", "corr-7",
             "-D", "publish", "user-property", "colour", "blue"])
        self.assertEqual(out, f"{topic}|hello|reply/here|text/plain|corr-7|colour:blue\n")

    def test_subscription_identifier_from_mosquitto_sub__mqtt_3_3_4_6(self):
        topic = unique("cli5/subid")
        out = self.subscribe_then_publish(
            ["-t", topic, "-q", "1", "-F", "%S %p", "-D", "subscribe", "subscription-identifier", "42"],
            ["-t", topic, "-q", "1", "-m", "tagged"])
        self.assertEqual(out, "42 tagged\n")


if __name__ == "__main__":
    unittest.main()
