"""examples/live-notifications end to end: its PHP backend (PHP's built-in server running server.php, and
notify.php run as a backend job would) against shardmq's HTTP API, and its page (MQTT.js over WebSocket in
headless Chromium), for MQTT 3.1.1 and 5:

- the page logs in with the subscribe-only token PHP made for its user and shows, in the DOM, the text PHP
  posted to that user, and nothing posted to another user; a screenshot goes to the artifacts directory;
- the page cannot subscribe to another user's topic: the SUBACK refuses it, 0x80 Failure in 3.1.1
  (section 3.9.3), 0x87 Not authorized in 5 (section 3.9.3), as MQTT.js reports it;
- when the token expires the live connection is closed, with DISCONNECT 0xA0 Maximum connect time first in
  5 (section 3.14.2.1; 3.1.1 has no server DISCONNECT, the socket just closes), and the expired token is
  refused at CONNECT: 3.1.1 return code 4 Bad user name or password (section 3.2.2.3), 5 reason 0x86.

Skipped on Mosquitto, which has no HTTP API.
"""

import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from test_paho import STARTUP_TIMEOUT_SECS, Broker, unique
from transport_broker import free_port
from transport_browser import BROWSER_DIR, Chromium, artifacts_dir

EXAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "live-notifications")
ADMIN = "admin-token-for-the-notifications-example"
WEBSOCKET_PATH = "/mqtt"
SHORT_TTL_SECS = 3
VERSIONS = (4, 5)  # MQTT.js protocolVersion: 3.1.1, 5


def wait_for_port(port, process, what):
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start-up")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on port {port} within {STARTUP_TIMEOUT_SECS} s")
            time.sleep(0.02)


class NotificationBroker(Broker):
    """shardmq configured as the example's shardmq.toml: MQTT over WebSocket for the page, API tokens the only
    way in (no anonymous clients, an empty password file), and the HTTP API for PHP."""

    def __init__(self):
        self.kind = "shardmq"
        self.log = []
        self.ws_port, self.http_port = free_port(), free_port()
        self.files = tempfile.mkdtemp(prefix="shardmq-notify-")
        no_users = os.path.join(self.files, "no-users.passwd")
        open(no_users, "w").close()
        self.config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        self.config.write(f"""
[auth]
allow_anonymous = false
password_file = {json.dumps(no_users)}
[[listeners]]
bind = "127.0.0.1:{self.ws_port}"
transport = "ws"
websocket_path = "{WEBSOCKET_PATH}"
[http]
bind = "127.0.0.1:{self.http_port}"
admin_token = "{ADMIN}"
tokens_file = {json.dumps(os.path.join(self.files, "tokens.json"))}
""")
        self.config.close()
        binary = os.environ.get("SHARDMQ_BIN", "target/debug/shardmq")
        self.process = subprocess.Popen([binary, "--shards", "2", "--config", self.config.name],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True, env={"RUST_LOG": "info", **os.environ, "NO_COLOR": "1"})
        threading.Thread(target=self._collect, args=(self.process.stderr,), daemon=True).start()
        try:
            wait_for_port(self.ws_port, self.process, "shardmq")
            wait_for_port(self.http_port, self.process, "shardmq")
        except RuntimeError as error:
            self.stop()
            raise RuntimeError(f"{error}:\n" + "".join(self.log)) from None

    def environment(self):
        """What the example's PHP reads."""
        return {**os.environ, "SHARDMQ_API": f"http://127.0.0.1:{self.http_port}", "SHARDMQ_ADMIN_TOKEN": ADMIN,
                "SHARDMQ_WS": f"ws://127.0.0.1:{self.ws_port}{WEBSOCKET_PATH}",
                "MQTTJS": os.path.join(BROWSER_DIR, "node_modules", "mqtt", "dist", "mqtt.min.js")}


class PhpBackend:
    """`php -S` serving the example's server.php on a free loopback port; `ttl_secs`: its tokens' lifetime."""

    def __init__(self, broker, ttl_secs):
        self.port = free_port()
        self.process = subprocess.Popen(["php", "-S", f"127.0.0.1:{self.port}", "server.php"], cwd=EXAMPLE_DIR,
                                        env={**broker.environment(), "TOKEN_TTL_SECONDS": str(ttl_secs)},
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, self.process, "php -S")
        except RuntimeError:
            self.stop()
            raise

    def page(self, user, version, renew=True):
        return f"http://127.0.0.1:{self.port}/?user={user}&v={version}&renew={int(renew)}"

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class LiveNotificationsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.environ.get("SHARDMQ_TEST_BROKER", "shardmq") == "mosquitto":
            raise unittest.SkipTest("the HTTP API is shardmq's own")
        cls.broker = NotificationBroker()
        cls.backends = []
        try:
            cls.backend = PhpBackend(cls.broker, 3600)
            cls.backends.append(cls.backend)
            cls.short_backend = PhpBackend(cls.broker, SHORT_TTL_SECS)
            cls.backends.append(cls.short_backend)
            cls.browser = Chromium()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "browser", None):
            cls.browser.close()
        for backend in cls.backends:
            backend.stop()
        cls.broker.stop()

    def notify(self, user, text):
        """notify.php, as a backend job runs it; the broker's answer."""
        done = subprocess.run(["php", os.path.join(EXAMPLE_DIR, "notify.php"), user, text], env=self.broker.environment(),
                              capture_output=True, text=True, timeout=30)
        self.assertEqual(done.returncode, 0, done.stderr)
        return json.loads(done.stdout)

    def open_page(self, backend, user, version, renew=True):
        self.browser.call("goto", url=backend.page(user, version, renew))
        self.browser.call("wait", expression="window.app && app.state !== 'loading'")
        state = self.eval("app.state")
        self.assertEqual(state, "live", f"{self.eval('status.textContent')}\nbroker log:\n{self.broker_log()}")

    def eval(self, expression):
        return self.browser.call("eval", expression=expression)["value"]

    def wait_for_log(self, line, timeout_secs=5):
        """The broker logs a token's expiry once its clients are closed, which the page may see first."""
        deadline = time.monotonic() + timeout_secs
        while line not in self.broker_log():
            if time.monotonic() > deadline:
                self.fail(f"no {line!r} in the broker log within {timeout_secs} s:\n{self.broker_log()}")
            time.sleep(0.05)

    def broker_log(self):
        return "".join(self.broker.log)

    def test_the_page_shows_what_php_posted_and_may_subscribe_to_nothing_else(self):
        for version in VERSIONS:
            with self.subTest(version=version):
                user, other = unique("alice"), unique("bob")
                self.open_page(self.backend, user, version)
                # To a user with no page open: nobody subscribed matches it, this page included.
                self.assertEqual(self.notify(other, "not for this page"), {"matched": False})
                text = f"Your order #{version}42 has shipped"
                self.assertEqual(self.notify(user, text), {"matched": True})
                self.browser.call("wait", expression="document.querySelectorAll('#notifications li').length >= 1")
                shown = self.eval("[...document.querySelectorAll('#notifications li')].map((li) => li.firstChild.textContent)")
                self.assertEqual(shown, [text])
                screenshot = os.path.join(artifacts_dir(), f"live-notifications-v{version}.png")
                self.browser.call("screenshot", path=screenshot)
                with open(screenshot, "rb") as file:
                    self.assertEqual(file.read(8), b"\x89PNG\r\n\x1a\n")

                refused = 0x87 if version == 5 else 0x80
                self.assertEqual(self.eval(f"app.subscribe('notify/{other}/#')"), [refused])
                self.assertEqual(self.eval("app.subscribe('notify/#')"), [refused])
                self.assertEqual(self.eval("app.state"), "live", "a refused SUBSCRIBE leaves the connection up")

    def test_an_expired_token_closes_the_live_connection_and_is_refused_at_connect(self):
        for version in VERSIONS:
            with self.subTest(version=version):
                user = unique("carol")
                self.open_page(self.short_backend, user, version, renew=False)
                # The driver bounds the wait (15 s); the token lives SHORT_TTL_SECS from the page load.
                self.browser.call("wait", expression="app.state === 'closed'")
                self.assertEqual(self.eval("app.reason"), 0xA0 if version == 5 else None, self.broker_log())
                # Closed by the expiry, not before it (expires_at is in whole seconds) and not by anything else.
                self.assertGreaterEqual(self.eval("app.closedAt") / 1000, self.eval("app.expiresAt") - 1)
                self.wait_for_log(f"API token expired token={self.eval('app.tokenId')} disconnected=1")
                again = self.eval(f"app.connect(app.token, 'notify/{user}/#')")
                self.assertEqual((again, self.eval("app.reason")), ("refused", 0x86 if version == 5 else 4))

    def test_a_renewing_page_outlives_its_first_token_and_still_gets_notifications(self):
        for version in VERSIONS:
            with self.subTest(version=version):
                user = unique("dave")
                self.open_page(self.short_backend, user, version)
                first = self.eval("app.tokenId")
                # Past the first token's expiry (and its broker-side sweep), on the second token or later.
                self.browser.call("wait", expression="app.renewals >= 1 && Date.now() / 1000 > app.firstExpiresAt + 1")
                self.wait_for_log(f"API token expired token={first} disconnected=0")
                self.assertEqual(self.eval("app.state"), "live", self.broker_log())
                self.assertNotEqual(self.eval("app.tokenId"), first)
                text = f"after renewal v{version}"
                self.assertEqual(self.notify(user, text), {"matched": True})
                self.browser.call("wait", expression=f"document.body.innerText.includes({json.dumps(text)})")


if __name__ == "__main__":
    unittest.main()
