"""Dynamic security driven by Debian's own `mosquitto_ctrl dynsec`, against the real broker (2 shards):
the file `mosquitto_ctrl dynsec init` writes, every command mosquitto_ctrl sends, clients created with it
connecting with paho, disabled / deleted clients refused and their live connections (on both shards)
closed, role ACLs with priorities on publish, subscribe and delivery, defaultACLAccess, the anonymous
group, the state surviving a restart, malformed control JSON answered with an error, and a non-admin's
PUBLISH to $CONTROL refused. Also started from a mosquitto.conf with Mosquitto's own plugin lines.

Start the broker as test_paho.py does (SHARDMQ_BIN). Skipped on Mosquitto (its broker is not set up
with the plugin here).
"""

import json
import os
import queue
import shutil
import subprocess
import tempfile
import unittest

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from test_paho import EVENT_TIMEOUT_SECS, Broker, ReceivingClient, unique
from test_paho_v5 import id_on_shard

ADMIN_PASSWORD = "admin-pw"
CONTROL = "$CONTROL/dynamic-security/v1"
RESPONSE = CONTROL + "/response"
# mosquitto_ctrl warns on every run without TLS; the tests read only its answers.
CTRL_NOISE = ("Warning: You are running mosquitto_ctrl without encryption.",
              "This means all of the configuration changes you are making are visible on the network")


class UserClient(ReceivingClient):
    """A paho MQTTv5 client with a user name and password; `refused` holds the CONNACK reason when the
    broker refused it (then it is not connected)."""

    def __init__(self, port, username=None, password=None, client_id=None):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=client_id or unique("dyn"), reconnect_on_failure=False)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.messages = queue.Queue()
        self.subscribed = queue.Queue()
        self.acknowledged = queue.Queue()
        self.disconnected = queue.Queue()
        connected = queue.Queue()
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_subscribe = lambda _c, _u, mid, codes, _p: self.subscribed.put((mid, codes))
        self.client.on_unsubscribe = lambda _c, _u, mid, codes, _p: self.subscribed.put((mid, codes))
        self.client.on_publish = lambda _c, _u, mid, reason, _p: self.acknowledged.put((mid, reason))
        self.client.on_disconnect = lambda _c, _u, _f, reason, _p: self.disconnected.put(reason)
        self.client.on_connect = lambda _c, _u, _f, reason, _p: connected.put(reason)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        reason = connected.get(timeout=EVENT_TIMEOUT_SECS)
        self.refused = reason.value if reason.is_failure else None
        if self.refused is not None:
            self.client.loop_stop()

    def subscribe(self, topic, qos=1):
        _, mid = self.client.subscribe(topic, options=SubscribeOptions(qos=qos))
        got_mid, codes = self.subscribed.get(timeout=EVENT_TIMEOUT_SECS)
        assert got_mid == mid
        return codes[0].value

    def unsubscribe(self, topic):
        _, mid = self.client.unsubscribe(topic)
        got_mid, codes = self.subscribed.get(timeout=EVENT_TIMEOUT_SECS)
        assert got_mid == mid
        return codes[0].value if isinstance(codes, list) else codes.value

    def publish(self, topic, payload, qos=1):
        """The PUBACK reason code value."""
        info = self.client.publish(topic, payload, qos=qos)
        while True:
            mid, reason = self.acknowledged.get(timeout=EVENT_TIMEOUT_SECS)
            if mid == info.mid:
                return reason.value

    def server_disconnect_reason(self):
        return self.disconnected.get(timeout=EVENT_TIMEOUT_SECS).value


class ConfBroker(Broker):
    """shardmq started from a mosquitto.conf (`--mosquitto-config`) instead of a TOML config."""

    def __init__(self, mosquitto_conf):
        self.mosquitto_conf = mosquitto_conf
        super().__init__()

    def _start_shardmq(self):
        real_popen = subprocess.Popen

        def popen(args, **options):
            args = [*args, "--mosquitto-config", self.mosquitto_conf]
            return real_popen(args, **options)

        subprocess.Popen = popen
        try:
            super()._start_shardmq()
        finally:
            subprocess.Popen = real_popen


class DynsecTestCase(unittest.TestCase):
    """A fresh dynamic security file made by `mosquitto_ctrl dynsec init` and a broker using it."""

    allow_anonymous = False

    def setUp(self):
        if os.environ.get("SHARDMQ_TEST_BROKER") == "mosquitto":
            self.skipTest("Mosquitto: the test broker is not set up with the dynamic security plugin")
        self.dir = tempfile.mkdtemp(prefix="shardmq-dynsec-")
        self.file = os.path.join(self.dir, "dynamic-security.json")
        init = subprocess.run(["mosquitto_ctrl", "dynsec", "init", self.file, "admin", ADMIN_PASSWORD],
                              capture_output=True, text=True, timeout=30)
        self.assertEqual(init.returncode, 0, init.stderr)
        self.clients = []
        self.broker = self.start_broker()

    def start_broker(self):
        return Broker(config_toml=f"[auth]\nallow_anonymous = {str(self.allow_anonymous).lower()}\n"
                                  f"dynamic_security_file = {json.dumps(self.file)}\n")

    def tearDown(self):
        for client in self.clients:
            try:
                client.client.loop_stop()
                client.client.disconnect()
            except Exception:
                pass
        self.broker.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def ctrl(self, *command, user="admin", password=ADMIN_PASSWORD):
        """Runs `mosquitto_ctrl ... dynsec COMMAND`; its output without the no-TLS warning."""
        run = subprocess.run(["mosquitto_ctrl", "-h", "127.0.0.1", "-p", str(self.broker.port), "-u", user,
                              "-P", password, "dynsec", *command],
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        lines = (run.stdout + run.stderr).splitlines()
        return "\n".join(line for line in lines if line.strip() and not line.startswith(CTRL_NOISE))

    def ok(self, *command):
        output = self.ctrl(*command)
        self.assertNotIn("Error", output, f"{command}: {output}")
        return output

    def connect(self, username=None, password=None, client_id=None):
        client = UserClient(self.broker.port, username, password, client_id)
        self.clients.append(client)
        return client

    def connected(self, username, password, client_id=None):
        client = self.connect(username, password, client_id)
        self.assertIsNone(client.refused, f"{username} refused with {client.refused:#x}" if client.refused else "")
        return client

    def file_state(self):
        with open(self.file) as state:
            return json.load(state)


class MosquittoCtrlCommandsTest(DynsecTestCase):
    def test_every_command_mosquitto_ctrl_sends_is_answered_as_it_expects(self):
        self.ok("createClient", "alice", "-p", "apw", "-c", "alice-id")
        self.assertIn("Client already exists", self.ctrl("createClient", "alice", "-p", "x"))
        self.ok("createClient", "bob", "-p", "bpw")
        self.ok("createGroup", "g1")
        self.assertIn("Group already exists", self.ctrl("createGroup", "g1"))
        self.ok("createRole", "r1")
        self.ok("addRoleACL", "r1", "publishClientSend", "a/#", "allow", "5")
        self.ok("addRoleACL", "r1", "subscribeLiteral", "b/+", "deny")
        self.ok("addClientRole", "alice", "r1", "3")
        self.ok("addGroupClient", "g1", "alice", "2")
        self.ok("addGroupRole", "g1", "r1", "1")

        client = self.ok("getClient", "alice")
        self.assertIn("Username: alice", client)
        self.assertIn("alice-id", client)
        self.assertIn("r1 (priority: 3)", client)
        self.assertIn("g1 (priority: 2)", client)
        group = self.ok("getGroup", "g1")
        self.assertIn("r1 (priority: 1)", group)
        self.assertIn("alice", group)
        role = self.ok("getRole", "r1")
        self.assertRegex(role, r"publishClientSend\s*: allow : a/# \(priority: 5\)")
        self.assertRegex(role, r"subscribeLiteral\s*: deny\s*: b/\+ \(priority: 0\)")
        self.assertEqual(self.ok("listClients").split(), ["admin", "alice", "bob"])
        self.assertEqual(self.ok("listClients", "1", "1").split(), ["alice"])
        self.assertEqual(self.ok("listGroups").split(), ["g1"])
        self.assertEqual(self.ok("listRoles").split(), ["admin", "r1"])
        self.assertRegex(self.ok("getDefaultACLAccess"), r"publishClientSend\s*: deny")
        self.ok("setDefaultACLAccess", "publishClientSend", "allow")
        self.assertRegex(self.ok("getDefaultACLAccess"), r"publishClientSend\s*: allow")
        self.ok("setAnonymousGroup", "g1")
        self.assertIn("g1", self.ok("getAnonymousGroup"))
        self.ok("setClientPassword", "alice", "newpw")
        self.ok("setClientId", "alice", "other-id")
        self.assertIn("other-id", self.ok("getClient", "alice"))
        self.ok("setClientId", "alice")
        self.assertNotIn("other-id", self.ok("getClient", "alice"))
        self.ok("disableClient", "bob")
        self.assertIn("Disabled: true", self.ok("getClient", "bob"))
        self.ok("enableClient", "bob")
        self.ok("removeRoleACL", "r1", "publishClientSend", "a/#")
        self.assertIn("ACL not found", self.ctrl("removeRoleACL", "r1", "publishClientSend", "a/#"))
        self.ok("removeClientRole", "alice", "r1")
        self.ok("removeGroupRole", "g1", "r1")
        self.ok("removeGroupClient", "g1", "alice")
        self.assertIn("Deleting the anonymous group is forbidden", self.ctrl("deleteGroup", "g1"))
        self.ok("createGroup", "g2")
        self.ok("setAnonymousGroup", "g2")
        self.ok("deleteGroup", "g1")
        self.ok("deleteRole", "r1")
        self.ok("deleteClient", "bob")
        self.assertIn("Client not found", self.ctrl("getClient", "bob"))
        self.assertIn("Role not found", self.ctrl("getRole", "r1"))
        self.assertIn("Group not found", self.ctrl("getGroup", "g1"))

        state = self.file_state()
        self.assertEqual([client["username"] for client in state["clients"]], ["admin", "alice"])
        self.assertEqual(state["anonymousGroup"], "g2")
        self.assertTrue(state["defaultACLAccess"]["publishClientSend"])
        alice = state["clients"][1]
        self.assertEqual(alice["iterations"], 101)
        self.assertNotIn("clientid", alice)
        self.assertNotIn("newpw", json.dumps(state), "only the hash is stored")
        self.connected("alice", "newpw")

    def test_a_wrong_admin_password_is_refused(self):
        self.assertIn("Connection error: Bad User Name or Password", self.ctrl("listClients", password="wrong"))


class ClientLifecycleTest(DynsecTestCase):
    def test_a_created_client_connects_and_disable_and_delete_close_its_sessions_on_every_shard(self):
        self.ok("createClient", "dev", "-p", "dev-pw")
        sessions = [self.connected("dev", "dev-pw", id_on_shard("dev", shard)) for shard in (0, 1)]
        self.assertEqual(self.connect("dev", "wrong").refused, 0x86)

        self.ok("disableClient", "dev")
        for session in sessions:
            self.assertEqual(session.server_disconnect_reason(), 0x98, "Administrative action")
        self.assertEqual(self.connect("dev", "dev-pw").refused, 0x87, "disabled")

        self.ok("enableClient", "dev")
        live = self.connected("dev", "dev-pw", id_on_shard("dev", 1))
        self.ok("deleteClient", "dev")
        self.assertEqual(live.server_disconnect_reason(), 0x98)
        self.assertEqual(self.connect("dev", "dev-pw").refused, 0x86, "no such client any more")

    def test_a_client_bound_to_a_client_id_connects_only_with_it(self):
        self.ok("createClient", "meter", "-p", "m", "-c", "meter-7")
        self.connected("meter", "m", "meter-7")
        self.assertEqual(self.connect("meter", "m", "meter-8").refused, 0x87)

    def test_the_state_survives_a_restart(self):
        self.ok("createClient", "keeper", "-p", "k")
        self.ok("createRole", "writer")
        self.ok("addRoleACL", "writer", "publishClientSend", "kept/#", "allow")
        self.ok("addClientRole", "keeper", "writer")
        self.broker.stop()
        self.broker = self.start_broker()
        keeper = self.connected("keeper", "k")
        self.assertEqual(keeper.publish("kept/x", "1"), 0x10, "allowed, no subscriber")
        self.assertEqual(keeper.publish("other", "1"), 0x87)
        self.assertIn("writer", self.ok("getClient", "keeper"))


class AclTest(DynsecTestCase):
    def setUp(self):
        super().setUp()
        self.ok("createClient", "pub", "-p", "p")
        self.ok("createClient", "sub", "-p", "s")
        self.ok("createRole", "sensors")
        self.ok("addRoleACL", "sensors", "publishClientSend", "sensors/#", "allow", "1")
        self.ok("addRoleACL", "sensors", "publishClientSend", "sensors/secret", "deny", "5")
        self.ok("addRoleACL", "sensors", "subscribePattern", "sensors/#", "allow", "1")
        self.ok("addRoleACL", "sensors", "subscribeLiteral", "sensors/+/raw", "deny", "1")
        self.ok("addRoleACL", "sensors", "publishClientReceive", "sensors/hidden", "deny", "9")
        self.ok("addRoleACL", "sensors", "unsubscribeLiteral", "sensors/#", "deny")
        self.ok("addClientRole", "pub", "sensors")
        self.ok("addClientRole", "sub", "sensors")

    def test_priorities_decide_publish_subscribe_and_delivery(self):
        sub = self.connected("sub", "s", id_on_shard("sub", 0))
        pub = self.connected("pub", "p", id_on_shard("pub", 1))
        self.assertEqual(sub.subscribe("sensors/#"), 1)
        self.assertEqual(sub.subscribe("sensors/+/raw"), 0x87, "the literal deny")
        self.assertEqual(sub.subscribe("other/#"), 0x87, "no ACL: defaultACLAccess subscribe deny")

        self.assertEqual(pub.publish("sensors/t1", "21"), 0)
        self.assertEqual(sub.next_message().topic, "sensors/t1")
        self.assertEqual(pub.publish("sensors/secret", "x"), 0x87, "priority 5 deny before priority 1 allow")
        self.assertEqual(pub.publish("other", "x"), 0x87, "defaultACLAccess publishClientSend deny")
        self.assertEqual(pub.publish("sensors/hidden", "x"), 0, "sent, but the receive ACL keeps it from sub")
        sub.assert_no_message()
        self.assertEqual(sub.unsubscribe("sensors/#"), 0x87, "unsubscribeLiteral deny")

    def test_a_removed_acl_stops_deliveries_to_a_live_subscription(self):
        self.ok("setDefaultACLAccess", "publishClientReceive", "deny")
        self.ok("addRoleACL", "sensors", "publishClientReceive", "sensors/#", "allow")
        sub = self.connected("sub", "s", id_on_shard("sub", 0))
        pub = self.connected("pub", "p", id_on_shard("pub", 1))
        self.assertEqual(sub.subscribe("sensors/#"), 1)
        pub.publish("sensors/a", "1")
        self.assertEqual(sub.next_message().topic, "sensors/a")
        self.ok("removeRoleACL", "sensors", "publishClientReceive", "sensors/#")
        pub.publish("sensors/b", "2")
        sub.assert_no_message()

    def test_default_acl_access_applies_to_a_client_without_roles(self):
        self.ok("createClient", "plain", "-p", "x")
        plain = self.connected("plain", "x")
        self.assertEqual(plain.publish("any/topic", "1"), 0x87)
        self.assertEqual(plain.subscribe("any/#"), 0x87)
        self.ok("setDefaultACLAccess", "publishClientSend", "allow")
        self.ok("setDefaultACLAccess", "subscribe", "allow")
        self.assertEqual(plain.subscribe("any/#"), 1)
        self.assertEqual(plain.publish("any/topic", "1"), 0)
        self.assertEqual(plain.next_message().topic, "any/topic")


class ControlTopicTest(DynsecTestCase):
    def admin(self):
        admin = self.connected("admin", ADMIN_PASSWORD)
        self.assertEqual(admin.subscribe(RESPONSE), 1)
        return admin

    def test_malformed_control_json_is_answered_with_an_error(self):
        admin = self.admin()
        for payload, error in [("{not json", "Payload not valid JSON"),
                               ('{"commands":[{"command":"frobnicate"}]}', "Unknown command"),
                               ('{"commands":[{"command":"createClient"}]}', "Invalid/missing username"),
                               ('{"commands":"x"}', "Invalid/missing commands")]:
            self.assertEqual(admin.publish(CONTROL, payload), 0)
            answer = json.loads(admin.next_message().payload)
            self.assertEqual(answer["responses"][0]["error"], error, payload)
        self.assertEqual(self.ok("listClients").split(), ["admin"], "the broker still answers")

    def test_a_non_admin_may_not_publish_to_control(self):
        self.ok("createClient", "eve", "-p", "e")
        self.ok("createRole", "everything")
        self.ok("addRoleACL", "everything", "publishClientSend", "#", "allow")
        self.ok("addClientRole", "eve", "everything")
        admin = self.admin()
        eve = self.connected("eve", "e")
        command = json.dumps({"commands": [{"command": "createClient", "username": "mallory", "password": "m"}]})
        self.assertEqual(eve.publish(CONTROL, command), 0x87, "# does not cover $CONTROL [MQTT-4.7.2-1]")
        admin.assert_no_message()
        self.assertIn("Client not found", self.ctrl("getClient", "mallory"))
        self.assertEqual(self.connect().refused, 0x87, "anonymous clients are refused (allow_anonymous false)")


class AnonymousGroupTest(DynsecTestCase):
    allow_anonymous = True

    def test_anonymous_clients_get_the_anonymous_groups_roles(self):
        anonymous = self.connect()
        self.assertIsNone(anonymous.refused)
        self.assertEqual(anonymous.publish("public/x", "1"), 0x87, "no anonymous group yet")
        self.ok("createRole", "guest")
        self.ok("addRoleACL", "guest", "publishClientSend", "public/#", "allow")
        self.ok("addRoleACL", "guest", "subscribePattern", "public/#", "allow")
        self.ok("createGroup", "guests")
        self.ok("addGroupRole", "guests", "guest")
        self.ok("setAnonymousGroup", "guests")
        self.assertIn("guests", self.ok("getAnonymousGroup"))
        self.assertEqual(anonymous.subscribe("public/#"), 1)
        self.assertEqual(anonymous.publish("public/x", "1"), 0)
        self.assertEqual(anonymous.next_message().topic, "public/x")
        self.assertEqual(anonymous.publish("private/x", "1"), 0x87)


class MosquittoConfPluginTest(DynsecTestCase):
    def start_broker(self):
        conf = os.path.join(self.dir, "mosquitto.conf")
        with open(conf, "w") as out:
            out.write("per_listener_settings false\nallow_anonymous false\n"
                      "plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n"
                      f"plugin_opt_config_file {self.file}\n")
        return ConfBroker(conf)

    def test_mosquittos_plugin_lines_serve_dynamic_security_built_in(self):
        self.ok("createClient", "dev", "-p", "d")
        self.connected("dev", "d")
        self.assertEqual(self.connect("dev", "x").refused, 0x86)
        self.assertEqual(self.connect().refused, 0x87, "allow_anonymous false")


if __name__ == "__main__":
    unittest.main()
