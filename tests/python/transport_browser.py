"""What the browser tests drive: Debian's headless Chromium running MQTT.js, through tests/browser/driver.mjs
(playwright-core), and the tiny static server the test page is loaded from.
"""

import functools
import http.server
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from urllib.parse import urlencode

BROWSER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "browser")
# Cold start of Chromium on a loaded 2-core machine takes seconds; one command (a page load, a wait for the
# page) is bounded by the driver at 15 s.
START_TIMEOUT_SECS = 90
COMMAND_TIMEOUT_SECS = 30


def artifacts_dir():
    """Where screenshots go: SHARDMQ_TEST_ARTIFACTS, or a fixed directory under the system temp dir."""
    directory = (os.environ.get("SHARDMQ_TEST_ARTIFACTS")
                 or os.path.join(tempfile.gettempdir(), "shardmq-test-artifacts"))
    os.makedirs(directory, exist_ok=True)
    return directory


class PageServer:
    """Serves the test page at / and MQTT.js's browser bundle at /mqtt.min.js on a free loopback port."""

    FILES = {"/": ("page.html", "text/html"),
             "/mqtt.min.js": (os.path.join("node_modules", "mqtt", "dist", "mqtt.min.js"), "text/javascript")}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            entry = PageServer.FILES.get(self.path.split("?", 1)[0])
            if entry is None:
                self.send_error(404)
                return
            with open(os.path.join(BROWSER_DIR, entry[0]), "rb") as file:
                body = file.read()
            self.send_response(200)
            self.send_header("Content-Type", entry[1])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args):
            pass

    def __init__(self):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PageServer.Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, **query):
        return f"http://127.0.0.1:{self.port}/?{urlencode(query)}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class BrowserError(AssertionError):
    pass


class Chromium:
    """One headless Chromium with a fresh profile. `trust_ca`: a PEM CA put into that profile's NSS database
    (the store Chromium on Linux trusts), so wss:// to a server certificate from it verifies like any other;
    without it Chromium must refuse the test server's certificate."""

    def __init__(self, trust_ca=None):
        self.home = tempfile.mkdtemp(prefix="shardmq-chromium-")
        if trust_ca:
            nssdb = os.path.join(self.home, ".pki", "nssdb")
            os.makedirs(nssdb)
            certutil = ["certutil", "-d", f"sql:{nssdb}"]
            subprocess.run([*certutil, "-N", "--empty-password"], check=True, capture_output=True)
            # "C,,": a CA trusted to issue server certificates (not e-mail or code-signing ones).
            subprocess.run([*certutil, "-A", "-t", "C,,", "-n", "shardmq-test-ca", "-i", trust_ca],
                           check=True, capture_output=True)
        self.stderr = []
        self.process = subprocess.Popen(
            ["node", os.path.join(BROWSER_DIR, "driver.mjs"), "--user-data-dir", os.path.join(self.home, "profile")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "HOME": self.home})
        self.answers = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=functools.partial(self._collect, self.process.stderr), daemon=True).start()
        self._answer(START_TIMEOUT_SECS)

    def _read(self):
        for line in self.process.stdout:
            self.answers.put(line)
        self.answers.put(None)

    def _collect(self, stream):
        for line in stream:
            self.stderr.append(line)

    def _answer(self, timeout):
        try:
            line = self.answers.get(timeout=timeout)
        except queue.Empty:
            raise BrowserError(f"browser driver silent for {timeout} s; stderr:\n" + "".join(self.stderr)) from None
        if line is None:
            raise BrowserError("browser driver exited; stderr:\n" + "".join(self.stderr))
        answer = json.loads(line)
        if not answer.get("ok"):
            raise BrowserError(f"browser driver: {answer.get('error')}; page console: {answer.get('console')}")
        return answer

    def call(self, op, **args):
        self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.process.stdin.flush()
        return self._answer(COMMAND_TIMEOUT_SECS)

    def close(self):
        try:
            self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.process.stdin.close()
            self.process.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            stream.close()
        shutil.rmtree(self.home, ignore_errors=True)
