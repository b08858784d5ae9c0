"""MQTT over TLS with clients nobody here wrote: paho-mqtt with a python `ssl` context trusting the test CA,
and mosquitto_pub/mosquitto_sub --cafile. Listeners (see transport_broker): `tls` (server certificate only),
`mtls` (a client certificate from the test CA is required; its CN becomes the user name) and `wss`.
"""

import dataclasses
import os
import shutil
import signal
import time
import socket
import ssl
import unittest

from test_paho import VERSIONS, unique
from transport_broker import TransportBroker
from transport_certs import CLIENT_USER, PkiTestCase, make_server_cert
from transport_cli import MosquittoSub, mosquitto_pub
from transport_paho import TransportClient, connect_outcome, tls_context
from transport_raw import mqtt_connect_packet, read_until_closed

CLI_VERSIONS = {"3.1.1": "mqttv311", "5": "mqttv5"}
TLS_ALERT_RECORD = 0x15  # a TLS record of content type alert [RFC 8446 5.1]


class TlsTest(PkiTestCase):
    def setUp(self):
        self.broker = TransportBroker(self.pki)
        self.clients = []

    def tearDown(self):
        for client in self.clients:
            try:
                client.disconnect()
            except Exception:
                pass
        self.broker.stop()

    def connect(self, listener, protocol, context):
        client = TransportClient(self.broker.ports[listener], protocol, context=context,
                                 websocket=listener == "wss")
        self.clients.append(client)
        return client

    def check_round_trip(self, listener, protocol, context):
        topic = unique("tls/round-trip")
        subscriber = self.connect(listener, protocol, context)
        self.assertEqual(subscriber.subscribe(topic, 1), [1])
        publisher = self.connect(listener, protocol, context)
        publisher.publish(topic, b"over tls", qos=1)
        message = subscriber.next_message()
        self.assertEqual((message.topic, message.payload), (topic, b"over tls"))

    def assert_refused(self, listener, protocol, context):
        outcome = connect_outcome(self.broker.ports[listener], protocol, context)
        # Refused means the broker ended it: a failed handshake (TLS 1.2, or a client-side check) or a close
        # before any CONNACK (TLS 1.3, where the client's handshake ends before the server checks its
        # certificate). Silence would be a broker that hangs on to a connection it should have dropped.
        self.assertIn(outcome.kind, ("handshake", "closed"), f"{outcome}\nbroker log:\n{self.broker.broker_log()}")
        return outcome

    def test_publish_subscribe_over_tls(self):
        for name, protocol in VERSIONS.items():
            with self.subTest(version=name):
                self.check_round_trip("tls", protocol, tls_context(self.pki.ca_cert))

    def test_publish_subscribe_over_wss_with_paho(self):
        # The browser tests' wss listener without a browser: tells a TLS-over-WebSocket fault from a Chromium one.
        for name, protocol in VERSIONS.items():
            with self.subTest(version=name):
                self.check_round_trip("wss", protocol, tls_context(self.pki.ca_cert))

    def test_client_refuses_a_broker_its_ca_did_not_sign(self):
        # The client side of the trust: the broker must present the test server certificate, nothing else.
        outcome = connect_outcome(self.broker.ports["tls"], VERSIONS["5"], tls_context(self.pki.other_ca_cert))
        self.assertEqual(outcome.kind, "handshake", outcome)
        self.assertIsInstance(outcome.error, ssl.SSLCertVerificationError)

    def test_mutual_tls_with_a_client_certificate_from_the_ca(self):
        context = tls_context(self.pki.ca_cert, self.pki.client_cert, self.pki.client_key)
        for name, protocol in VERSIONS.items():
            with self.subTest(version=name):
                self.check_round_trip("mtls", protocol, context)

    def test_mutual_tls_refuses_a_client_without_a_certificate(self):
        for name, protocol in VERSIONS.items():
            with self.subTest(version=name):
                self.assert_refused("mtls", protocol, tls_context(self.pki.ca_cert))

    def test_mutual_tls_refuses_a_certificate_from_another_ca(self):
        context = tls_context(self.pki.ca_cert, self.pki.other_client_cert, self.pki.other_client_key)
        for name, protocol in VERSIONS.items():
            with self.subTest(version=name):
                self.assert_refused("mtls", protocol, context)

    def test_mutual_tls_refuses_an_expired_certificate(self):
        context = tls_context(self.pki.ca_cert, self.pki.expired_client_cert, self.pki.expired_client_key)
        for name, protocol in VERSIONS.items():
            with self.subTest(version=name):
                self.assert_refused("mtls", protocol, context)

    def test_mutual_tls_still_serves_a_good_client_after_refusals(self):
        self.assert_refused("mtls", VERSIONS["5"], tls_context(self.pki.ca_cert))
        self.assert_refused("mtls", VERSIONS["5"], tls_context(self.pki.ca_cert, self.pki.expired_client_cert,
                                                               self.pki.expired_client_key))
        self.check_round_trip("mtls", VERSIONS["5"],
                              tls_context(self.pki.ca_cert, self.pki.client_cert, self.pki.client_key))

    def test_client_certificate_cn_is_the_user_name_acls_see(self):
        # use_identity_as_username on `mtls`: with an ACL granting only user alice (the client certificate's CN)
        # identity/alice/#, alice's publish there arrives and her publish elsewhere does not. Were the CN not
        # taken as the user name she would be anonymous, granted nothing, and neither would arrive. The CONNECT's
        # own User Name ("mallory") is not who she is: the certificate is.
        acl = os.path.join(self.pki_dir.name, "mtls.acl")
        with open(acl, "w") as file:
            file.write(f"user {CLIENT_USER}\ntopic readwrite identity/{CLIENT_USER}/#\n"
                       "user mallory\ntopic readwrite identity/#\n")
        self.broker.stop()
        self.broker = TransportBroker(self.pki, mtls_acl_file=acl)
        watcher = TransportClient(self.broker.ports["mqtt"], VERSIONS["3.1.1"])  # anonymous, no ACL there
        self.clients.append(watcher)
        self.assertEqual(watcher.subscribe("identity/#", 1), [1])
        for name, version in VERSIONS.items():
            with self.subTest(version=name):
                context = tls_context(self.pki.ca_cert, self.pki.client_cert, self.pki.client_key)
                alice = TransportClient(self.broker.ports["mtls"], version, context=context,
                                        username="mallory", password="anything")
                self.clients.append(alice)
                alice.publish("identity/bob/x", b"not hers", qos=1)
                alice.publish(f"identity/{CLIENT_USER}/x", f"hers {name}".encode(), qos=1)
                message = watcher.next_message()
                self.assertEqual((message.topic, message.payload),
                                 (f"identity/{CLIENT_USER}/x", f"hers {name}".encode()))
                watcher.assert_no_message()

    def test_sighup_swaps_the_server_certificate_and_connected_clients_stay(self):
        # The broker reads copies of the server files; a new certificate from another CA is written over
        # them and the broker gets SIGHUP. New handshakes then present the new certificate (a client trusting
        # only the first CA is refused, one trusting the other CA connects); a client connected before goes on.
        reload_dir = os.path.join(self.pki_dir.name, unique("reload"))
        os.mkdir(reload_dir)
        cert, key = os.path.join(reload_dir, "server.pem"), os.path.join(reload_dir, "server.key")
        shutil.copy(self.pki.server_cert, cert)
        shutil.copy(self.pki.server_key, key)
        self.broker.stop()
        self.broker = TransportBroker(dataclasses.replace(self.pki, server_cert=cert, server_key=key))
        protocol = VERSIONS["5"]
        before = self.connect("tls", protocol, tls_context(self.pki.ca_cert))
        topic = unique("tls/reload")
        self.assertEqual(before.subscribe(topic, 1), [1])

        new_cert, new_key = make_server_cert(self.pki_dir.name, "other-ca", unique("server-other"))
        shutil.copy(new_cert, cert)
        shutil.copy(new_key, key)
        self.broker.process.send_signal(signal.SIGHUP)
        if self.broker.kind == "shardmq":
            deadline = time.monotonic() + 10
            while "TLS certificate and key read again" not in self.broker.broker_log():
                self.assertLess(time.monotonic(), deadline, f"no reload line:\n{self.broker.broker_log()}")
                time.sleep(0.02)
        else:
            time.sleep(1)

        self.assert_refused("tls", protocol, tls_context(self.pki.ca_cert))
        after = self.connect("tls", protocol, tls_context(self.pki.other_ca_cert))
        after.publish(topic, b"after the reload", qos=1)
        message = before.next_message()
        self.assertEqual((message.topic, message.payload), (topic, b"after the reload"),
                         "the connection from before the reload still receives")

    def test_mosquitto_clients_with_cafile(self):
        port = self.broker.ports["tls"]
        for name, version in CLI_VERSIONS.items():
            with self.subTest(version=name):
                topic = unique("tls/cli")
                subscriber = MosquittoSub(port, version, topic, 1, "--cafile", self.pki.ca_cert)
                mosquitto_pub(port, version, topic, "hello over tls", "--cafile", self.pki.ca_cert)
                self.assertEqual(subscriber.messages(), [f"{topic} hello over tls"])

    def test_mosquitto_clients_with_a_client_certificate(self):
        port = self.broker.ports["mtls"]
        tls = ["--cafile", self.pki.ca_cert, "--cert", self.pki.client_cert, "--key", self.pki.client_key]
        for name, version in CLI_VERSIONS.items():
            with self.subTest(version=name):
                topic = unique("mtls/cli")
                subscriber = MosquittoSub(port, version, topic, 1, *tls)
                mosquitto_pub(port, version, topic, "hello over mtls", *tls)
                self.assertEqual(subscriber.messages(), [f"{topic} hello over mtls"])

    def test_plain_mqtt_on_the_tls_port_is_closed_without_connack(self):
        with socket.create_connection(("127.0.0.1", self.broker.ports["tls"])) as plain:
            plain.sendall(mqtt_connect_packet(unique("plain-on-tls")))
            data, how = read_until_closed(plain)
        self.assertIn(how, ("eof", "reset"), f"connection left open; got {data!r}")
        # At most a TLS alert record; never an MQTT packet (a CONNACK starts 0x20).
        self.assertTrue(data == b"" or data[0] == TLS_ALERT_RECORD, f"answer to plain MQTT: {data!r}")
        # And the broker keeps serving TLS clients.
        self.check_round_trip("tls", VERSIONS["3.1.1"], tls_context(self.pki.ca_cert))


    def test_a_tls_client_on_the_plain_port_is_closed_and_others_go_on(self):
        # A ClientHello starts 0x16: to the MQTT codec a CONNECT with reserved flags set [MQTT-2.1.3-1], a
        # malformed packet, so the connection is closed; the TLS client sees its handshake fail.
        outcome = connect_outcome(self.broker.ports["mqtt"], VERSIONS["3.1.1"], tls_context(self.pki.ca_cert))
        self.assertIn(outcome.kind, ("handshake", "closed"), f"{outcome}\nbroker log:\n{self.broker.broker_log()}")
        self.check_round_trip("mqtt", VERSIONS["3.1.1"], None)

    def test_a_tls_handshake_that_never_finishes_is_closed_by_the_connect_timeout(self):
        if self.broker.kind != "shardmq":
            self.skipTest("Mosquitto keeps a socket that never finishes its handshake")
        # Half a ClientHello, then silence: the CONNECT timeout (10 s by default) ends it; the shard is not
        # held meanwhile (a full round trip goes through while it waits).
        with socket.create_connection(("127.0.0.1", self.broker.ports["tls"])) as stalled:
            stalled.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]))
            self.check_round_trip("tls", VERSIONS["5"], tls_context(self.pki.ca_cert))
            started = time.monotonic()
            data, how = read_until_closed(stalled, timeout=20)
        self.assertIn(how, ("eof", "reset"), f"still open after 20 s; got {data!r}")
        self.assertLess(time.monotonic() - started, 15)

if __name__ == "__main__":
    unittest.main()
