"""PostgreSQL users and ACLs (`[auth.postgres]`), as mosquitto-go-auth keeps them, against the real broker
(2 shards) and Debian's PostgreSQL in a throwaway cluster started here (initdb in a temp dir, as the
postgres user when run as root): a user whose `$7$` hash `shardmq passwd` made logs in, wrong passwords and
unknown users get 0x86 (v5) / 4 (3.1.1), the ACL rows decide publish and subscribe; then PostgreSQL is
stopped while the broker runs: new logins are refused (0x87, fail closed, a log line naming postgres and
the host), an already connected client with cached answers goes on; PostgreSQL starts again and logins work.

Skipped when PostgreSQL is not installed (scripts/test installs it) or on Mosquitto.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

from test_external_auth import Client, connect_v311, log_has
from test_paho import EVENT_TIMEOUT_SECS, Broker, unique

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1:] or [None]
PG_BIN = PG_BIN[0]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """A PostgreSQL cluster in a temp dir, trust auth on 127.0.0.1 only, started and stopped by pg_ctl."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="shardmq-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.dir, "postgres")
        self.run(f"{PG_BIN}/initdb", "-D", self.data, "--auth=trust", "-U", "postgres", "-E", "UTF8")
        self.start()

    def run(self, *command):
        subprocess.run([*self.as_postgres, *command], check=True, capture_output=True, timeout=60)

    def start(self):
        options = f"-k {self.dir} -p {self.port} -h 127.0.0.1 -c fsync=off"
        self.run(f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-o", options, "-w", "start")

    def stop(self):
        self.run(f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def sql(self, text):
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-v", "ON_ERROR_STOP=1",
                        "-q", "-c", text], check=True, capture_output=True, timeout=30)

    def remove(self):
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def passwd_hash(password):
    """A Mosquitto `$7$` hash made by `shardmq passwd`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "passwd")
        binary = os.environ.get("SHARDMQ_BIN", "target/release/shardmq")
        subprocess.run([binary, "passwd", "-c", "-b", path, "alice", password], check=True, timeout=30)
        with open(path) as file:
            return file.read().strip().split(":", 1)[1]


@unittest.skipIf(PG_BIN is None or shutil.which("psql") is None, "PostgreSQL is not installed")
@unittest.skipIf(os.environ.get("SHARDMQ_TEST_BROKER") == "mosquitto", "shardmq's [auth.postgres]")
class PostgresAuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster()
        hashed = passwd_hash("pw")
        cls.cluster.sql(f"""
            CREATE TABLE mqtt_users (username text PRIMARY KEY, password_hash text NOT NULL);
            CREATE TABLE mqtt_acls (username text NOT NULL, topic text NOT NULL, rw integer NOT NULL);
            INSERT INTO mqtt_users VALUES ('alice', '{hashed}');
            INSERT INTO mqtt_acls VALUES ('alice', 'allowed/#', 3), ('alice', 'writeonly/#', 2),
                                         ('alice', 'own/%c/#', 1);
        """)
        cls.broker = Broker(config_toml=f"""
[auth.postgres]
connection = "host=127.0.0.1 port={cls.cluster.port} user=postgres dbname=postgres"
password_query = "SELECT password_hash FROM mqtt_users WHERE username = $1"
acl_query = "SELECT topic, rw FROM mqtt_acls WHERE username = $1"
timeout_ms = 1000
""")

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()
        cls.cluster.remove()

    def log_has(self, *parts):
        return log_has(self.broker, *parts)

    def test_1_users_and_acl_rows_in_postgres_decide(self):
        client_id = unique("pg")
        alice = Client(self.broker.port, "alice", "pw", client_id=client_id)
        self.assertIsNone(alice.refused)
        self.assertEqual(Client(self.broker.port, "alice", "wrong").refused, 0x86)
        self.assertEqual(Client(self.broker.port, "bob", "pw").refused, 0x86, "unknown user")
        self.assertEqual(connect_v311(self.broker.port, unique("v3"), "alice", "pw"), 0)
        self.assertEqual(connect_v311(self.broker.port, unique("v3"), "alice", "wrong"), 4)
        self.assertEqual(alice.subscribe("allowed/pg/#"), 1)
        self.assertEqual(alice.subscribe("writeonly/#"), 0x87, "write access does not allow subscribing")
        self.assertEqual(alice.subscribe(f"own/{client_id}/#"), 1, "%c is the client id")
        self.assertEqual(alice.subscribe("own/someone-else/#"), 0x87)
        self.assertEqual(alice.publish("writeonly/x", b"w"), 0x10, "allowed; no subscriber")
        self.assertEqual(alice.publish("elsewhere/x", b"no"), 0x87)
        self.assertEqual(alice.publish("allowed/pg/x", b"yes"), 0)
        self.assertEqual(alice.messages.get(timeout=EVENT_TIMEOUT_SECS).payload, b"yes")
        alice.close()

    def test_2_postgres_stopped_fails_closed_and_recovers(self):
        connected = Client(self.broker.port, "alice", "pw")
        self.assertEqual(connected.subscribe("allowed/down/#"), 1)
        self.assertEqual(connected.publish("allowed/down/x", b"before"), 0)
        self.assertEqual(connected.messages.get(timeout=EVENT_TIMEOUT_SECS).payload, b"before")
        self.cluster.stop()
        try:
            self.assertEqual(Client(self.broker.port, "alice", "pw").refused, 0x87, "fail closed")
            self.assertEqual(connect_v311(self.broker.port, unique("v3"), "alice", "pw"), 5)
            self.assertTrue(self.log_has("external auth backend failed", "postgres", f"127.0.0.1:{self.cluster.port}"))
            self.assertEqual(connected.publish("allowed/down/x", b"during"), 0, "cached answers go on")
            self.assertEqual(connected.messages.get(timeout=EVENT_TIMEOUT_SECS).payload, b"during")
            self.assertEqual(connected.publish("allowed/down/new", b"uncached"), 0x87, "an uncached check fails closed")
        finally:
            self.cluster.start()
        for _ in range(2):  # every worker, also one whose connection died with the old server
            again = Client(self.broker.port, "alice", "pw")
            self.assertIsNone(again.refused, "logins work again once PostgreSQL is back")
            again.close()
        connected.close()


if __name__ == "__main__":
    unittest.main()
