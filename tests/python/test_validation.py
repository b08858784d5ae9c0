"""The chat example of `[[validation]]` with paho-mqtt clients against the real broker (2 shards): a
clean message reaches the room, a forbidden word is diverted to the sender's `rejected` topic (with the
rule named in a user property for v5), the schema refuses a message without `text` (v5: PUBACK 0x99 with a
Reason String naming the rule; 3.1.1: acknowledged and dropped).

Start the broker as test_paho.py does (SHARDMQ_BIN). Skipped on Mosquitto, which has no such rules.
"""

import json
import os
import shutil
import tempfile
import unittest

import paho.mqtt.client as mqtt

from test_paho import Client, unique
from test_paho_v5 import V5TestCase, id_on_shard

SCHEMA = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string", "maxLength": 500}}}


class ChatValidationTest(V5TestCase):
    @classmethod
    def setUpClass(cls):
        cls.files = tempfile.mkdtemp(prefix="shardmq-validation-")
        schema = os.path.join(cls.files, "chat.schema.json")
        words = os.path.join(cls.files, "words.txt")
        with open(schema, "w") as out:
            json.dump(SCHEMA, out)
        with open(words, "w") as out:
            out.write("# no spam in chat\nspam\nregex:free\\s+money\n")
        cls.config_toml = f"""
sys_interval_secs = 1

[[validation]]
name = "chat-schema"
filter = "chat/messages/+/+"
json_schema_file = {json.dumps(schema)}

[[validation]]
name = "chat-words"
filter = "chat/messages/+/+"
forbidden_words_file = {json.dumps(words)}
case_insensitive = true
on_invalid = "divert"
divert_to = "chat/messages/{{2}}/{{3}}/rejected"
"""

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.files, ignore_errors=True)

    def setUp(self):
        super().setUp()
        self.skip_on_mosquitto("no message validation")
        self.room = unique("room")

    def topic(self, user):
        return f"chat/messages/{self.room}/{user}"

    def test_clean_message_reaches_the_room_and_a_forbidden_word_goes_to_the_senders_rejected_topic(self):
        members = self.v5(client_id=id_on_shard("members", 1))
        self.assertEqual(members.subscribe(f"chat/messages/{self.room}/+", 1), 1)
        alice = self.v5(client_id=id_on_shard("alice", 0))
        self.assertEqual(alice.subscribe(self.topic("alice") + "/rejected", 1), 1)

        self.assertEqual(alice.publish(self.topic("alice"), json.dumps({"text": "hello room"})), 0)
        message = members.next_message()
        self.assertEqual((message.topic, json.loads(message.payload)), (self.topic("alice"), {"text": "hello room"}))

        self.assertEqual(alice.publish(self.topic("alice"), json.dumps({"text": "get FREE   money"})), 0)
        rejected = alice.next_message()
        self.assertEqual(rejected.topic, self.topic("alice") + "/rejected")
        self.assertEqual(json.loads(rejected.payload), {"text": "get FREE   money"})
        user_properties = dict(rejected.properties.UserProperty)
        self.assertEqual(user_properties["shardmq-rejected-by"], "chat-words")
        self.assertIn("forbidden word", user_properties["shardmq-rejection-reason"])
        members.assert_no_message()

    def test_v5_schema_refuses_a_message_without_text_with_0x99_and_the_rule_named(self):
        members = self.v5(client_id=id_on_shard("members", 0))
        members.subscribe(f"chat/messages/{self.room}/+", 1)
        bob = self.v5(client_id=id_on_shard("bob", 1))
        reason, props = bob.publish_acknowledged(self.topic("bob"), json.dumps({"txt": "typo"}), qos=1)
        self.assertEqual(reason, 0x99)
        self.assertIn("chat-schema", props.ReasonString)
        self.assertIn('"text" is a required property', props.ReasonString)
        # QoS 1 only: after a PUBREC 0x99 paho still sends PUBREL and reports the PUBCOMP 0x92 it gets
        # (QoS 2 refusals are checked with raw clients in tests/validation.rs).
        reason, props = bob.publish_acknowledged(self.topic("bob"), "not json at all", qos=1)
        self.assertEqual(reason, 0x99)
        self.assertIn("not JSON", props.ReasonString)
        members.assert_no_message()

    def test_v311_refusal_is_acknowledged_and_dropped_and_the_divert_still_arrives(self):
        members = self.v311(id_on_shard("members", 1))
        members.subscribe(f"chat/messages/{self.room}/+", 1)
        carol = Client(self.broker.port, mqtt.MQTTv311, client_id=id_on_shard("carol", 0))
        self.clients.append(carol)
        carol.subscribe(self.topic("carol") + "/rejected", 1)
        carol.publish(self.topic("carol"), json.dumps({"no": "text"}), qos=1)  # acknowledged
        carol.publish(self.topic("carol"), json.dumps({"text": "SPAM!"}), qos=2)
        rejected = carol.next_message()
        self.assertEqual((rejected.topic, json.loads(rejected.payload)), (self.topic("carol") + "/rejected", {"text": "SPAM!"}))
        members.assert_no_message()
        carol.publish(self.topic("carol"), json.dumps({"text": "fine"}), qos=1)
        self.assertEqual(json.loads(members.next_message().payload), {"text": "fine"})

    def test_sys_topics_count_the_failures_of_each_rule_by_its_index(self):
        watcher = self.v5(client_id=id_on_shard("sys", 1))
        self.assertEqual(watcher.subscribe("$SYS/broker/validation/#", 0), 0)
        seen = {}
        wanted = {f"$SYS/broker/validation/{index}/{what}" for index in (0, 1) for what in ("rule", "failed")}
        while not wanted <= seen.keys():  # the retained ones, at once, in any order
            message = watcher.next_message()
            seen[message.topic] = message.payload.decode()
        self.assertEqual((seen["$SYS/broker/validation/0/rule"], seen["$SYS/broker/validation/1/rule"]),
                         ("chat-schema", "chat-words"))
        before = int(seen["$SYS/broker/validation/0/failed"])
        dave = self.v5(client_id=id_on_shard("dave", 0))
        reason, _ = dave.publish_acknowledged(self.topic("dave"), json.dumps({"txt": "typo"}), qos=1)
        self.assertEqual(reason, 0x99)
        while True:  # the next interval publishes the new count
            message = watcher.next_message()
            if message.topic == "$SYS/broker/validation/0/failed":
                self.assertEqual(int(message.payload), before + 1)
                break


if __name__ == "__main__":
    unittest.main()
