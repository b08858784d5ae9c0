#!/usr/bin/env bash
# HTTP API publishes per broker CPU-second, beside MQTT publishes, same build, same run, same machine
# (perf/RESULTS.md, "HTTP API cost"). One shard pinned to core 0, the load on core 1, a fresh broker per
# measurement, 64-byte payloads, QoS 0, one MQTT subscriber receiving every message:
#   http         wrk (Debian), CONNS keep-alive connections, POST /api/v1/publish, one message a request
#   http-batch   the same with POST /api/v1/publish/batch, BATCH messages a request
#   mqtt         loadgen fan-in, 50 publishers -> 1 subscriber (as scripts/compare), at the rate the http run
#                reached and at MQTT_RATE msgs/s
# Broker CPU = utime+stime of the whole process (shard and HTTP threads) from /proc/<pid>/stat over the
# measured window. wrk runs closed-loop (as fast as answers come), loadgen open-loop at a fixed rate.
#
#   perf/http_cost.sh                  build release binaries, then measure
#   NO_BUILD=1 perf/http_cost.sh       use the binaries already in $CARGO_TARGET_DIR (or target)/release
#   DURATION=10 CONNS=8 BATCH=100 MQTT_RATE=10000 perf/http_cost.sh
# Output: perf/runs/http-cost-<date>/ (wrk output, broker stats after each HTTP run, loadgen JSON, uptime)
# and the table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNS=${CONNS:-8}
BATCH=${BATCH:-100}
MQTT_RATE=${MQTT_RATE:-10000}
PORT=${PORT:-19300}
ADMIN=http-cost-admin-token-0123456789
log() { printf '== %s\n' "$*" >&2; }

need_apt=()
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
    log "apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if [ -z "${NO_BUILD:-}" ]; then
    log "cargo build --release (shardmq, loadgen)"
    cargo build --release -p shardmq --bin shardmq -p loadgen --bins
fi
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
OUT=perf/runs/http-cost-$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
HZ=$(getconf CLK_TCK)
PAYLOAD=$(printf 'x%.0s' $(seq 64))
BROKER_PID="" SUB_PID=""

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

start_broker() {
    PORT=$((PORT + 2))
    cat >"$OUT/shardmq.toml" <<TOML
sys_interval_secs = 0
[[listeners]]
bind = "127.0.0.1:$PORT"
[http]
bind = "127.0.0.1:$((PORT + 1))"
admin_token = "$ADMIN"
connections_max = $((CONNS + 8))
TOML
    taskset -c 0 "$BIN/shardmq" --shards 1 --config "$OUT/shardmq.toml" >"$OUT/broker.out" 2>"$OUT/broker.log" &
    BROKER_PID=$!
    for _ in $(seq 200); do
        grep -q "(http)" "$OUT/broker.out" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "shardmq did not start:" >&2; cat "$OUT/broker.log" >&2; exit 1
}

stop_broker() {
    [ -n "$SUB_PID" ] && kill "$SUB_PID" 2>/dev/null && wait "$SUB_PID" 2>/dev/null || true
    kill "$BROKER_PID" && wait "$BROKER_PID" || true
    SUB_PID=""
}
trap 'stop_broker 2>/dev/null || true' EXIT

# One QoS 0 subscriber to cost/http on core 1; returns once a message published over HTTP matched it.
subscribe() {
    taskset -c 1 mosquitto_sub -p "$PORT" -t cost/http -q 0 >/dev/null &
    SUB_PID=$!
    for _ in $(seq 100); do
        curl -s -H "Authorization: Bearer $ADMIN" -d '{"topic":"cost/http","payload":"probe"}' \
            "http://127.0.0.1:$((PORT + 1))/api/v1/publish" | grep -q '"matched":true' && return 0
        sleep 0.05
    done
    echo "the subscriber never subscribed" >&2; exit 1
}

# run_wrk NAME LABEL PATH BODY MESSAGES_PER_REQUEST
run_wrk() {
    local name=$1 label=$2 path=$3 body=$4 per_request=$5
    start_broker
    subscribe
    cat >"$OUT/$name.lua" <<LUA
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $ADMIN"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$body'
LUA
    local before after
    before=$(cpu_ticks "$BROKER_PID")
    taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$OUT/$name.lua" \
        "http://127.0.0.1:$((PORT + 1))$path" >"$OUT/$name.txt"
    after=$(cpu_ticks "$BROKER_PID")
    curl -s -H "Authorization: Bearer $ADMIN" "http://127.0.0.1:$((PORT + 1))/api/v1/stats" >"$OUT/$name-stats.json"
    stop_broker
    if grep -q "Non-2xx" "$OUT/$name.txt"; then echo "$name: some requests failed:" >&2; cat "$OUT/$name.txt" >&2; exit 1; fi
    local requests p50 p99
    requests=$(awk '/requests in/ { print $1 }' "$OUT/$name.txt")
    p50=$(awk '$1 == "50%" { print $2 }' "$OUT/$name.txt")
    p99=$(awk '$1 == "99%" { print $2 }' "$OUT/$name.txt")
    python3 - "$label" "$requests" "$per_request" "$before" "$after" "$HZ" "$DURATION" "$p50" "$p99" \
        "$OUT/$name-stats.json" <<'PY'
import json, sys
name, requests, per_request, before, after, hz, duration, p50, p99, stats = sys.argv[1:]
messages = int(requests) * int(per_request)
cpu = (int(after) - int(before)) / int(hz)
dropped = sum(shard["dropped_slow_consumer"] for shard in json.load(open(stats))["shards"])
print(f"| {name} | {messages / float(duration):,.0f} | {cpu:.2f} | {messages / cpu:,.0f} | {1e6 * cpu / messages:.1f} | "
      f"{p50} / {p99} per request | {dropped:,} |")
PY
    RATE_HTTP=${RATE_HTTP:-$((requests * per_request / DURATION))}
}

# run_mqtt NAME RATE
run_mqtt() {
    local name=$1 rate=$2
    start_broker
    taskset -c 1 "$BIN/loadgen" fan-in --publishers 50 --subscribers 1 --rate "$rate" --qos 0 \
        --payload-bytes 64 --warmup 2 --duration "$DURATION" --port "$PORT" --broker-pid "$BROKER_PID" \
        --label shardmq --name "$name" --out "$OUT" --quiet >"$OUT/$name.txt"
    stop_broker
    python3 - "$OUT/$name.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
cpu = summary["broker"]["cpu_secs_measure"]
sent = summary["sent_per_sec"] * summary["duration_secs"]
lat = summary["latency_us"]
print(f"| MQTT publish (loadgen fan-in 50 -> 1, {summary['rate_target_per_sec']:,.0f}/s) | {summary['sent_per_sec']:,.0f} | "
      f"{cpu:.2f} | {sent / cpu:,.0f} | {1e6 * cpu / sent:.1f} | {lat['p50']} / {lat['p99']} µs publish to delivery | "
      f"{summary['lost']:,} lost |")
PY
}

uptime | tee "$OUT/uptime" >&2
single="{\"topic\":\"cost/http\",\"payload\":\"$PAYLOAD\"}"
batch="{\"messages\":[$(for i in $(seq "$BATCH"); do printf '%s{"topic":"cost/http","payload":"%s"}' "$([ "$i" = 1 ] || echo ,)" "$PAYLOAD"; done)]}"
{
    echo "| load | messages/s | broker CPU-s | messages per CPU-second | CPU-µs/msg | latency p50 / p99 | QoS 0 dropped |"
    echo "|---|---|---|---|---|---|---|"
    run_wrk http "HTTP publish (wrk -c$CONNS, 1 msg/request)" /api/v1/publish "$single" 1
    run_mqtt mqtt-same-rate "$RATE_HTTP"
    run_mqtt mqtt "$MQTT_RATE"
    run_wrk http-batch "HTTP batch (wrk -c$CONNS, $BATCH msgs/request)" /api/v1/publish/batch "$batch" "$BATCH"
} | tee "$OUT/table.md"
uptime | tee -a "$OUT/uptime" >&2
