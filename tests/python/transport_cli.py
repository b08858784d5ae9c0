"""mosquitto_pub and mosquitto_sub as the server-side clients of the transport tests. The subscriber runs
with -d so that its "received SUBACK" debug line tells when it is subscribed: a publish sent after that line
must reach it (no publish-until-received loop that could hide a lost first message).
"""

import queue
import subprocess
import threading

from test_paho import EVENT_TIMEOUT_SECS

MESSAGE_PREFIX = "MESSAGE "


def mosquitto_pub(port, version, topic, message, *extra):
    """One QoS 1 publish; raises if mosquitto_pub fails (it waits for the PUBACK)."""
    done = subprocess.run(["mosquitto_pub", "-V", version, "-h", "127.0.0.1", "-p", str(port), "-t", topic,
                           "-q", "1", "-m", message, *extra],
                          timeout=EVENT_TIMEOUT_SECS * 2, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"mosquitto_pub to {topic} failed ({done.returncode}): {done.stderr}")


class MosquittoSub:
    """mosquitto_sub for `count` messages on `topic`; started subscribed (SUBACK seen) or raises."""

    def __init__(self, port, version, topic, count, *extra):
        self.process = subprocess.Popen(
            # stdbuf: mosquitto_sub's stdout is a pipe here, block-buffered, and the SUBACK line must come now.
            ["stdbuf", "-oL", "mosquitto_sub", "-d", "-V", version, "-h", "127.0.0.1", "-p", str(port),
             "-t", topic, "-q", "1", "-C", str(count), "-W", str(EVENT_TIMEOUT_SECS * 2),
             "-F", f"{MESSAGE_PREFIX}%t %p", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.output = []
        threading.Thread(target=self._read, daemon=True).start()
        while True:
            try:
                line = self.lines.get(timeout=EVENT_TIMEOUT_SECS * 2)
            except queue.Empty:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"mosquitto_sub not subscribed; output: {self.output}") from None
            if line is None:
                self.process.wait()
                self.process.stdout.close()
                raise AssertionError(f"mosquitto_sub exited ({self.process.returncode}) before SUBACK: "
                                     f"{self.output} {self.process.stderr.read()}")
            if "received SUBACK" in line:
                return

    def _read(self):
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def messages(self):
        """Waits for mosquitto_sub to exit after its `count` messages; returns them as "topic payload"."""
        try:
            self.process.wait(timeout=EVENT_TIMEOUT_SECS * 3)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # The reader thread has seen every line once it queued the end marker.
        while self.lines.get(timeout=EVENT_TIMEOUT_SECS) is not None:
            pass
        stderr = self.process.stderr.read()
        self.process.stderr.close()
        self.process.stdout.close()
        if self.process.returncode != 0:
            raise AssertionError(f"mosquitto_sub exited {self.process.returncode}: {stderr} {self.output}")
        return [line[len(MESSAGE_PREFIX):].rstrip("\n") for line in self.output if line.startswith(MESSAGE_PREFIX)]
