#!/usr/bin/env bash
# The cost of persistence (issue 22): QoS 1 p2p through shardmq with `[persistence] durability` none,
# periodic and sync, beside Mosquitto with `persistence true`, same machine, same run, same loadgen.
# Broker: one shard (one thread) pinned to core 0; loadgen on core 1; MQTT 3.1.1, 64-byte payloads,
# P2P_PAIRS pairs at each of RATES msgs/s (open loop), DURATION s measured after WARMUP s.
# The data directory is on the real disk (DATA_ROOT, default under $TMPDIR or /var/tmp), not tmpfs,
# so sync's fdatasync is a real one. Mosquitto writes its snapshot only every autosave_interval (1800 s
# by default), so per message it costs nothing: it is there as the reference of "persistence on".
#
#   perf/durability_cost.sh                  # RATES="10000 50000", about 2.5 minutes
#   RATES=20000 MODES="sync" perf/durability_cost.sh
#   LOADGEN_ARGS=--persistent perf/durability_cost.sh   # persistent sessions: every message is journaled
#
# Builds nothing: uses $CARGO_TARGET_DIR/release/{shardmq,loadgen} (cargo build --release -p shardmq -p loadgen --bins).
# Outputs: perf/runs/<date>-durability/<broker>-<rate>.json (loadgen's report) and table.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
SHARDMQ=${SHARDMQ:-$TARGET/release/shardmq}
LOADGEN=${LOADGEN:-$TARGET/release/loadgen}
RATES=${RATES:-"10000 50000"}
MODES=${MODES:-"none periodic sync mosquitto"}
P2P_PAIRS=${P2P_PAIRS:-50}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
OUT=perf/runs/$(date -u +%Y%m%d-%H%M%S)-durability
DATA_ROOT=$(mktemp -d "${DATA_ROOT:-/var/tmp}/shardmq-durability-XXXXXX")
mkdir -p "$OUT"
trap 'rm -rf "$DATA_ROOT"' EXIT
PORT=$((21000 + RANDOM % 2000))

start() {
    local mode=$1
    rm -rf "$DATA_ROOT/data" && mkdir -p "$DATA_ROOT/data"
    if [ "$mode" = mosquitto ]; then
        printf '%s\n' "listener $PORT 127.0.0.1" "allow_anonymous true" "persistence true" \
            "persistence_location $DATA_ROOT/data/" "max_connections -1" "set_tcp_nodelay true" \
            "max_queued_messages 100000" >"$OUT/mosquitto.conf"
        taskset -c 0 mosquitto -c "$OUT/mosquitto.conf" >>"$OUT/mosquitto.log" 2>&1 &
    else
        printf '[persistence]\ndir = "%s"\ndurability = "%s"\n' "$DATA_ROOT/data" "$mode" >"$OUT/shardmq-$mode.toml"
        RUST_LOG=warn taskset -c 0 "$SHARDMQ" --listen "127.0.0.1:$PORT" --shards 1 \
            --config "$OUT/shardmq-$mode.toml" >>"$OUT/shardmq-$mode.log" 2>&1 &
    fi
    BROKER_PID=$!
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "$mode did not listen" >&2
    exit 1
}

for rate in $RATES; do
    for mode in $MODES; do
        PORT=$((PORT + 1))
        start "$mode"
        name=$mode-$rate
        echo "== $name, load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/table.txt"
        taskset -c 1 "$LOADGEN" p2p --pairs "$P2P_PAIRS" --rate "$rate" --qos 1 --duration "$DURATION" \
            --warmup "$WARMUP" ${LOADGEN_ARGS:-} --port "$PORT" --broker-pid "$BROKER_PID" --label "$mode" --name "$name" \
            --out "$OUT" 2>&1 | tee -a "$OUT/table.txt" || echo "($name failed)" | tee -a "$OUT/table.txt"
        kill "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true
    done
done
echo "results in $OUT"
