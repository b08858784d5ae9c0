//! The default native config as a commented TOML file (`shardmq config default`): every field with what
//! it does, its unit and its default. Tests check that it parses back to `Config::default()` and that it
//! names every field the parser knows, so it cannot drift from the code.

/// `shardmq config default` prints this. Fields whose default is "unset" are shown commented out.
pub const DEFAULT_CONFIG_TOML: &str = r#"# shardmq configuration (native TOML). Every field is optional; the values below are the defaults.
# Use it with `shardmq --config FILE`. Flags (--listen, --shards) override the file.

# Where clients connect. With neither `listen` nor any [[listeners]] entry, shardmq listens for MQTT on
# 0.0.0.0:1883 and MQTT over WebSocket on 0.0.0.0:8083 (path /mqtt), as if these were written:
#
# [[listeners]]
# bind = "0.0.0.0:1883"
# transport = "mqtt"
#
# [[listeners]]
# bind = "0.0.0.0:8083"
# transport = "ws"
#
# Each [[listeners]] entry takes:
#   bind = "host:port"            address to accept on; port 0 picks a free port (required)
#   transport = "mqtt"            "mqtt" (TCP), "tls", "ws" (WebSocket) or "wss" (WebSocket over TLS)
#   websocket_path = "/mqtt"      HTTP path of the WebSocket upgrade (ws/wss only)
#   websocket_origins = []        allowed Origin headers of a WebSocket upgrade; empty = any (ws/wss only)
#   connections_max = 1000        connections open at once on this listener (default: no per-listener cap)
#   [listeners.tls]               required for tls/wss, refused for mqtt/ws
#   cert_file = "server.pem"      PEM server certificate chain, leaf first (required)
#   key_file = "server.key"       PEM private key (required)
#   ca_file = "ca.pem"            PEM CAs that sign client certificates (default: none)
#   require_certificate = false   ask for a client certificate signed by ca_file, refuse clients without one
#                                 (false: none is asked for, as in Mosquitto)
#   use_identity_as_username = false  the certificate's Common Name becomes the MQTT username
#   [listeners.auth]              overrides of [auth] for this listener; unset = inherit
#   allow_anonymous = false
#   password_file = "/etc/shardmq/passwd"
#   acl_file = "/etc/shardmq/acl"
#   external = false              this listener does not use [auth.http] / [auth.postgres]

# A single plain MQTT listener, short for one [[listeners]] entry (not together with [[listeners]]).
# listen = "0.0.0.0:1883"

# Shards: executors pinned one per CPU. Default: one per CPU in the process affinity mask.
# shards = 4

# Connections open at once over the whole process; more are closed right after accept (no CONNACK).
connections_max = 19000

# Connections one source IP address may hold open at once (all listeners); more are closed right after
# accept. Default: no limit.
# connections_per_address_max = 100

# New connections one source IP address may open per second (token bucket of one second's worth, all
# listeners); faster ones are closed right after accept. Default: no limit.
# connect_rate_per_address_max_per_second = 20

# The process's memory budget, bytes of resident memory (Mosquitto's memory_limit; at least 1 MiB). Above
# it load is shed: new CONNECTs are refused (v5 0x97 Quota exceeded, 3.x return code 3) and QoS 0 to clients
# with unsent bytes queued is dropped, until memory is below 90% of it. Default: no budget.
# memory_max_bytes = 1073741824

# Cap on each socket's kernel send buffer (SO_SNDBUF), bytes. Default: the kernel's.
# socket_send_buffer_bytes = 65536

# Cap on each socket's kernel receive buffer (SO_RCVBUF), bytes. Default: the kernel's.
# socket_recv_buffer_bytes = 65536

# Submission queue entries of each shard's io_uring (a power of two, 8 to 32768; the completion queue
# holds four times as many). An unprivileged broker shrinks it to fit the locked-memory limit (ulimit -l).
ring_entries = 4096

# Provided receive buffers per shard (a power of two, at most 32768), each read_buffer_bytes long. An idle
# connection holds none: a receive takes one and gives it back as soon as its bytes are copied out.
read_buffers = 256

# Log filter when RUST_LOG is not set: error, warn, info, debug, trace, or tracing directives.
log_level = "info"

# Batches one shard may have queued towards another before it parks batches in an overflow list.
mesh_queue_batches = 1024

# Messages one shard may hold for another while their queue is full. Past it QoS 0 publishes to that shard
# are dropped, past twice it QoS 1/2 publishes too (counted, logged). Never blocks the shard.
mesh_overflow_max_messages = 65536

# Bytes a shard receives from one socket in one go (size of each provided receive buffer; 512 to 16777216).
read_buffer_bytes = 16384

# Seconds between two publications of the $SYS/broker/... topics (retained, summed over shards, as
# Mosquitto's sys_interval); 0 publishes none.
sys_interval_secs = 10

# Checks on what clients publish, run by the publishing shard before routing, in order; the first rule that
# fails decides (none by default: nothing is checked). Each rule: a topic `filter`, exactly one check
# (max_payload_bytes, min_payload_bytes, require_utf8, require_json, json_schema_file, forbidden_words_file
# with case_insensitive, required_user_properties, required_content_type) and `on_invalid` = "reject"
# (v5 0x99), "divert" (with divert_to, `{N}` = the topic's level N) or "disconnect".
# [[validation]]
# filter = "chat/messages/+/+"
# json_schema_file = "/etc/shardmq/chat.schema.json"
# on_invalid = "reject"

# The HTTP API: publish over HTTP, API tokens (usable as MQTT credentials on every listener), admin
# endpoints; OpenAPI document at /api/v1/openapi.json. Off by default: it starts only once `bind` is set.
[http]
# Address of the HTTP API, "host:port". Default: unset (no HTTP API).
# bind = "127.0.0.1:8080"
# PEM certificate chain (leaf first) and its private key: set both for HTTPS only. Default: unset (HTTP).
# cert_file = "/etc/shardmq/server.crt"
# key_file = "/etc/shardmq/server.key"
# Bearer token that may do everything (at least 16 characters). Default: unset (only API tokens work).
# admin_token = "change-me-to-a-long-random-string"
# JSON file keeping API tokens (their SHA-256 only) across restarts. Default: unset (kept in memory).
# tokens_file = "/var/lib/shardmq/tokens.json"
# Longest ttl_seconds a token may be given, seconds.
token_ttl_max_secs = 2592000
# Largest request body, bytes (413 beyond).
body_max_bytes = 1048576
# Largest request head (request line and header fields), bytes (431 beyond).
head_max_bytes = 8192
# A request must arrive whole within this many seconds (408 otherwise).
request_timeout_secs = 10
# An idle keep-alive connection is closed after this many seconds.
idle_timeout_secs = 60
# HTTP connections open at once; more get 503.
connections_max = 256
# Requests per second over all connections (429 beyond); 0 = no limit.
request_rate_max_per_second = 0
# Messages one POST /api/v1/publish/batch may carry.
batch_max_messages = 1000
# More listeners of the same API, each plain or HTTPS with its own certificate (they share everything
# else, the connection cap and the rate limit), e.g. plain on loopback above and HTTPS outside:
# [[http.listeners]]
# bind = "0.0.0.0:8443"
# cert_file = "/etc/shardmq/server.crt"
# key_file = "/etc/shardmq/server.key"

# Crash-safe persistence: persistent sessions, their queued and inflight QoS 1/2 messages and retained
# messages survive a restart or kill -9 (an append-only log per shard under `dir`). Off by default (no dir).
# durability: "sync" (PUBACK/PUBREC/SUBACK only once on disk), "periodic" (synced every interval_ms), "none".
# [persistence]
# dir = "/var/lib/shardmq"
# durability = "periodic"
# interval_ms = 100
# compact_ratio = 4
# compact_min_bytes = 67108864
# Kept allocated past each log's end; with less free space than this the disk counts as full and new
# QoS 1/2 publishes are refused (v5 PUBACK/PUBREC 0x97, a 3.x connection is closed unacknowledged).
# reserve_bytes = 1048576

# Who may connect, for every listener without its own [listeners.auth].
[auth]
# Accept clients that send no username. Turn it off once a password file is set.
allow_anonymous = true
# Mosquitto-format password file, written by `shardmq passwd` or `mosquitto_passwd`. Default: none.
# password_file = "/etc/shardmq/passwd"
# Mosquitto-format ACL file (topic / user / pattern lines). Default: none (every topic allowed).
# acl_file = "/etc/shardmq/acl"
# Mosquitto dynamic security JSON file (`mosquitto_ctrl dynsec init FILE admin`), changed at run time by
# `mosquitto_ctrl dynsec`; replaces password_file and acl_file, for every listener. Default: none.
# dynamic_security_file = "/etc/shardmq/dynamic-security.json"
# An external backend decides logins (instead of password_file) and/or publish / subscribe (instead of
# acl_file), called off the shards, answers cached per shard, fail closed (README: External auth).
# [auth.http]
# authenticate_url = "http://127.0.0.1:8080/mqtt/auth"
# authorize_url = "http://127.0.0.1:8080/mqtt/acl"
# timeout_ms = 5000
# cache_ttl_secs = 60
# cache_max_entries = 10000
# requests_in_flight_max = 4
# queued_requests_max = 1024
# fail_open = false
# Or PostgreSQL ($1 = user name, $2 = client id; access 1 read, 2 write, 3 both, 4 subscribe):
# [auth.postgres]
# connection = "host=127.0.0.1 port=5432 user=mqtt password=secret dbname=mqtt"
# password_query = "SELECT password_hash FROM mqtt_users WHERE username = $1"
# acl_query = "SELECT topic, rw FROM mqtt_acls WHERE username = $1"
# pool_connections_max = 2
# timeout_ms = 2000

# Prometheus text at /metrics and the dashboard at / on a small HTTP listener of their own.
[metrics]
# host:port to serve them on. Default: none (not served).
# bind = "127.0.0.1:9100"

# MQTT limits and switches.
[mqtt]
# Largest packet accepted, bytes (announced as Maximum Packet Size in a v5 CONNACK).
packet_size_max_bytes = 1048576
# Incoming QoS 1/2 PUBLISHes a client may have unacknowledged (our Receive Maximum), messages.
receive_maximum = 100
# Outgoing unacknowledged QoS 1/2 PUBLISHes per session, messages (lower if the client asks for less).
inflight_max_messages = 100
# Offline/overflow queue of a session: most messages kept.
session_queue_max_messages = 1000
# Offline/overflow queue of a session: most payload + topic bytes kept.
session_queue_max_bytes = 8388608
# Encoded frames waiting for one connection's socket, bytes; QoS 0 deliveries beyond it are dropped.
out_queue_max_bytes = 4194304
# Unsent bytes owed to one connection (answers and deliveries, each frame counted with ~64 bytes of
# bookkeeping) past which its input is no longer read, so TCP pushes back on a client that does not read.
out_queue_pause_bytes = 1048576
# Unsent bytes owed to one connection past which it is closed.
out_queue_close_bytes = 67108864
# A connection paused this many seconds without its socket taking a send is closed.
out_queue_stall_max_secs = 60
# PUBLISH packets per second one connection may send (a token bucket holding one second's worth, as EMQX's
# per-client limiter). A client past it is throttled, not dropped: its input is not read (TCP pushes back on
# it) until the bucket has refilled a tenth. Default: no limit.
# publish_rate_max_per_second = 200
# PUBLISH topic + payload bytes per second one connection may send, throttled likewise. Default: no limit.
# publish_bytes_max_per_second = 1048576
# Cap on a v5 client's keep-alive, seconds (sent back as Server Keep Alive when lower than asked).
keepalive_max_secs = 65535
# A connection that sends no CONNECT within this many seconds is closed.
connect_timeout_secs = 10
# Cap on a session's expiry interval, seconds; 4294967295 allows sessions that never expire.
session_expiry_max_secs = 4294967295
# Most retained messages kept (per shard replica); new topics beyond it are not retained.
retained_max_messages = 100000
# Most topic + payload bytes of retained messages kept; a message past it is not retained (the one already
# retained on its topic stays), counted like the above.
retained_max_bytes = 1073741824
# Most client-to-server topic aliases per connection (v5 Topic Alias Maximum); 0 disables them.
topic_alias_max = 10
# Highest QoS accepted and granted: 0, 1 or 2.
qos_max = 2
# Accept retained messages (v5 Retain Available).
retain_available = true
# Accept subscriptions with + and # (v5 Wildcard Subscription Available).
wildcard_subscriptions_available = true
# Accept v5 Subscription Identifiers.
subscription_identifiers_available = true
# Accept $share/... subscriptions (v5 Shared Subscription Available).
shared_subscriptions_available = true
# How a shared group's messages are spread when its members live on several shards: "round_robin" over all
# connected members on all shards (at most one hop between shards), or "local": a connected member on the
# publishing shard first (no hop), the other shards only when it has none.
shared_subscription_strategy = "round_robin"
# Most sessions (connected or not) one shard keeps; a CONNECT needing a new one beyond it gets Server Busy.
sessions_per_shard_max = 1000000
# When set, every v5 client is refused with 0x9C Use Another Server and this Server Reference, 3.x clients
# with return code 3. Default: unset.
# server_reference = "other-broker:1883"
# Longest client identifier accepted, bytes.
client_id_length_max_bytes = 256
# Longest topic name (PUBLISH) or topic filter (SUBSCRIBE) accepted, bytes (the spec allows 65535).
topic_length_max_bytes = 65535
# Most levels (parts between /) in a topic name or filter accepted; deeper ones are refused (PUBLISH:
# DISCONNECT 0x90, SUBSCRIBE: 0x8F for that filter).
topic_levels_max = 128
# Most topic filters one session may hold.
subscriptions_per_session_max = 1000
# Send v5 Reason Strings with error reason codes.
reason_strings = true
# Prefix of the v5 Response Information sent when a client asks for it. Default: unset (not sent).
# response_information_prefix = "reply/"
# Users of the v5 enhanced authentication method SCRAM-SHA-256; none = the method is not offered.
# [[mqtt.scram_users]]
# username = "alice"
# password = "secret"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn default_file_parses_back_to_the_defaults() {
        let parsed = Config::from_toml(DEFAULT_CONFIG_TOML).unwrap();
        assert_eq!(parsed, Config::default());
    }

    /// The field names a table accepts, read from the parser's own "unknown field, expected one of" error,
    /// so a field added to the code without a line here fails this test.
    fn fields_of(table_prefix: &str) -> Vec<String> {
        let err = Config::from_toml(&format!("{table_prefix}no_such_field_zz = 1\n")).unwrap_err().to_string();
        let expected = err.split("expected one of").nth(1).unwrap_or_else(|| panic!("no field list in: {err}"));
        let fields: Vec<String> = expected.split('`').skip(1).step_by(2).map(str::to_string).collect();
        assert!(fields.len() > 1, "{err}");
        fields
    }

    #[test]
    fn default_file_names_every_field_with_a_comment_above() {
        let lines: Vec<&str> = DEFAULT_CONFIG_TOML.lines().collect();
        let tables = [
            ("", "listeners"),
            ("[auth]\n", "[auth]"),
            ("[mqtt]\n", "[mqtt]"),
            ("[http]\n", "[http]"),
            ("[[listeners]]\nbind = \"127.0.0.1:1\"\n", "[[listeners]]"),
            ("[[listeners]]\nbind = \"127.0.0.1:1\"\n[listeners.tls]\n", "[listeners.tls]"),
            ("[[listeners]]\nbind = \"127.0.0.1:1\"\n[listeners.auth]\n", "[listeners.auth]"),
        ];
        for (prefix, table) in tables {
            // The parser also knows the deprecated names (aliases); the file shows only the current ones.
            let deprecated = |field: &String| {
                crate::broker::DEPRECATED_NAMES.iter().any(|(old, _)| old == field)
                    || crate::config::RENAMED_FIELDS.iter().any(|(_, old, _)| old == field)
            };
            for field in fields_of(prefix).into_iter().filter(|field| !deprecated(field)) {
                let written = |line: &&str| {
                    let line = line.trim_start_matches(['#', ' ']);
                    let first_word = line.split_whitespace().next().unwrap_or("");
                    line.starts_with(&format!("{field} ="))
                        || [format!("[{field}]"), format!("[[{field}]]")].iter().any(|table| first_word == table)
                        || first_word.ends_with(&format!(".{field}]"))
                        || first_word.ends_with(&format!(".{field}]]"))
                };
                let at = lines
                    .iter()
                    .position(written)
                    .unwrap_or_else(|| panic!("{table}: `{field}` is not in the default file"));
                assert!(at > 0 && lines[at - 1].starts_with('#'), "{table}: `{field}` has no comment above it");
            }
        }
    }
}
