"""The dashboard at / in headless Chromium: it loads from the broker's [metrics] listener, reads /metrics
every second, and its numbers and charts move while paho clients connect and publish; a screenshot goes to
the artifacts directory (see transport_browser.artifacts_dir).
"""

import os
import threading
import time
import unittest

import paho.mqtt.client as mqtt

from test_paho import Broker, Client
from transport_broker import free_port
from transport_browser import Chromium, artifacts_dir


def number(text):
    """A dashboard figure ("12", "3.5k") as a float."""
    scale = {"k": 1e3, "M": 1e6, "G": 1e9}.get(text[-1:], 1)
    return float(text.rstrip("kMG")) * scale


class DashboardTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.metrics_port = free_port()
        if os.environ.get("SHARDMQ_TEST_BROKER", "shardmq") == "mosquitto":
            raise unittest.SkipTest("the dashboard is shardmq's own")
        cls.broker = Broker(config_toml=f'sys_interval_secs = 0\n[metrics]\nbind = "127.0.0.1:{cls.metrics_port}"\n')
        try:
            cls.browser = Chromium()
        except Exception:
            cls.broker.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls.broker.stop()

    def text(self, selector):
        return self.browser.call("eval", expression=f"document.querySelector({selector!r}).textContent")["value"]

    def test_dashboard_numbers_and_charts_move_while_messages_flow(self):
        self.browser.call("goto", url=f"http://127.0.0.1:{self.metrics_port}/")
        self.browser.call("wait", expression="document.getElementById('clients').textContent === '0'")
        self.assertEqual(self.text("#shards tbody tr:nth-child(2) td"), "1", "a row per shard (2 shards)")
        subscriber = Client(self.broker.port, mqtt.MQTTv5)
        subscriber.subscribe("load/#", 0)
        publisher = Client(self.broker.port, mqtt.MQTTv311)
        stop = threading.Event()

        def publish():
            while not stop.is_set():
                publisher.client.publish("load/x", b"payload", qos=0)
                time.sleep(0.005)

        flow = threading.Thread(target=publish, daemon=True)
        flow.start()
        try:
            self.browser.call("wait", expression="document.getElementById('clients').textContent === '2'")
            self.browser.call("wait", expression="Number(document.getElementById('rate-in').textContent) > 10 "
                                                 "|| /k$/.test(document.getElementById('rate-in').textContent)")
            self.browser.call("wait", expression="Number(document.getElementById('rate-out').textContent) > 10 "
                                                 "|| /k$/.test(document.getElementById('rate-out').textContent)")
            first = number(self.text("#received"))
            self.browser.call("wait", expression=f"parseFloat(document.getElementById('received').textContent) "
                                                 f"!== {first}")
            self.assertGreater(number(self.text("#received")), first)
            # The message chart has drawn something other than its empty grid: a green (in) line pixel. Waited
            # for (a line needs two samples), and greenish rather than exact (the line is antialiased).
            green = """(() => {
                const c = document.getElementById('chart-messages'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                for (let i = 0; i < d.length; i += 4) if (d[i + 1] > 120 && d[i] < 110 && d[i + 2] < 110 && d[i + 3] > 0) return true;
                return false; })()"""
            self.browser.call("wait", expression=green)
            self.assertTrue(self.browser.call("eval", expression=green)["value"], "the messages chart shows the incoming rate")
            path = os.path.join(artifacts_dir(), "dashboard.png")
            self.browser.call("screenshot", path=path)
            self.assertGreater(os.path.getsize(path), 10_000)
        finally:
            stop.set()
            flow.join()
            publisher.disconnect()
            subscriber.disconnect()
        self.browser.call("wait", expression="document.getElementById('clients').textContent === '0'")


if __name__ == "__main__":
    unittest.main()
