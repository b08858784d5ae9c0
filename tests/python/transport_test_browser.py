"""MQTT.js in headless Chromium over ws:// and wss://, MQTT 3.1.1 and 5: the page subscribes to `news/#`, a
plain-TCP mosquitto_pub sends to news/a, news/b (and other/x, which the filter must not match), the page
shows exactly news/a and news/b; then the page publishes and a TCP mosquitto_sub receives it. A screenshot
of each page goes to the artifacts directory (see transport_browser.artifacts_dir).

wss:// trusts the test CA through the browser profile's NSS database, not --ignore-certificate-errors; a
browser without that trust must fail to connect, which shows the trust is what lets the others connect.
"""

import os
import time
import unittest

from test_paho import SILENCE_SECS, unique
from transport_broker import WEBSOCKET_PATH, TransportBroker
from transport_browser import Chromium, PageServer, artifacts_dir
from transport_certs import PkiTestCase
from transport_cli import MosquittoSub, mosquitto_pub

# MQTT.js protocolVersion -> the matching mosquitto_pub/sub -V.
VERSIONS = {4: "mqttv311", 5: "mqttv5"}


class BrowserTest(PkiTestCase):
    """One broker, page server and Chromium for the class (a Chromium start costs seconds); a fresh page per
    case."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.broker = TransportBroker(cls.pki)
        cls.pages = PageServer()
        try:
            cls.browser = Chromium(trust_ca=cls.pki.ca_cert)
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "browser", None):
            cls.browser.close()
        cls.pages.stop()
        cls.broker.stop()
        super().tearDownClass()

    def broker_url(self, scheme):
        return f"{scheme}://127.0.0.1:{self.broker.ports[scheme]}{WEBSOCKET_PATH}"

    def open_page(self, browser, scheme, version):
        client_id = unique(f"browser-{scheme}-v{version}")
        opened = browser.call("open", url=self.pages.url(broker=self.broker_url(scheme), version=version,
                                                          client=client_id, filter="news/#"))
        return client_id, opened

    def check_round_trip(self, scheme, version):
        client_id, opened = self.open_page(self.browser, scheme, version)
        self.assertEqual(opened["state"], "subscribed", f"page: {opened}\nbroker log:\n{self.broker.broker_log()}")
        self.assertEqual(opened["granted"], [1])
        tcp = self.broker.ports["mqtt"]
        for topic, text in (("other/x", "not for the page"), ("news/a", "hello a"), ("news/b", "hello b")):
            mosquitto_pub(tcp, VERSIONS[version], topic, text)
        shown = self.browser.call("messages", count=2)["messages"]
        time.sleep(SILENCE_SECS)  # anything else (other/x) would show up by now
        shown = self.browser.call("messages", count=2)["messages"]
        self.assertEqual(sorted(shown), ["news/a: hello a", "news/b: hello b"])
        screenshot = os.path.join(artifacts_dir(), f"{self.broker.kind}-{scheme}-v{version}.png")
        self.browser.call("screenshot", path=screenshot)
        with open(screenshot, "rb") as file:
            self.assertEqual(file.read(8), b"\x89PNG\r\n\x1a\n")

        topic = f"browser/out/{client_id}"
        subscriber = MosquittoSub(tcp, VERSIONS[version], topic, 1)
        self.browser.call("publish", topic=topic, payload="from the page", qos=1)
        self.assertEqual(subscriber.messages(), [f"{topic} from the page"])

    def test_mqtt_js_over_ws_subscribes_with_wildcard_and_publishes(self):
        for version in VERSIONS:
            with self.subTest(version=version):
                self.check_round_trip("ws", version)

    def test_mqtt_js_over_wss_trusting_the_test_ca(self):
        for version in VERSIONS:
            with self.subTest(version=version):
                self.check_round_trip("wss", version)

    def test_chromium_without_the_test_ca_refuses_wss(self):
        untrusting = Chromium(trust_ca=None)
        try:
            _, opened = self.open_page(untrusting, "wss", 4)
        finally:
            untrusting.close()
        self.assertEqual(opened["state"], "failed", opened)
        # The same page in the browser that trusts the CA connects: the trust is the only difference.
        _, trusted = self.open_page(self.browser, "wss", 4)
        self.assertEqual(trusted["state"], "subscribed", trusted)


if __name__ == "__main__":
    unittest.main()
