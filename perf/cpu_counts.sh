#!/usr/bin/env bash
# Broker cost per message in counts that do not depend on machine load (issue 18's CPU target): system
# calls, io_uring_enter calls, SQEs submitted and CQEs posted, context switches, wake-ups and loopback
# packets sent in the broker's own context, plus CPU-µs (utime/stime from /proc) for reference.
#
#   perf/cpu_counts.sh BROKER SCENARIO [BINARY]
#     BROKER   shardmq | mosquitto
#     SCENARIO fanin-q0 | fanin-q1 | p2p-q0 | p2p-q1
#     BINARY   the shardmq binary (default target/release/shardmq)
#   env: RATE (10000), SECS (counted window, 5), LOADGEN, PORT, OUT (directory for loadgen's summary)
#
# One broker on core 0 (one shard), loadgen on core 1 at a fixed open-loop rate; after a 2 s warm-up
# `perf stat -p` counts SECS seconds, i.e. RATE x SECS messages (the loadgen summary confirms no loss),
# then /proc/PID/stat gives utime+stime over the next SECS seconds with perf detached.
# The hardware counters (instructions) are not exposed on this VM, so user/kernel split is CPU time.
set -euo pipefail
broker=$1 scenario=$2 binary=${3:-target/release/shardmq}
RATE=${RATE:-10000}
SECS=${SECS:-5}
LOADGEN=${LOADGEN:-target/release/loadgen}
PORT=${PORT:-$((19000 + RANDOM % 500))}
OUT=${OUT:-/tmp/cpu_counts}
# Real-time priority for broker and loadgen (RT=" " to run without): on a machine shared with compiles the
# pair would otherwise be preempted, batch up, and show a load-dependent cost per message.
RT=${RT:-chrt -f 20}
mkdir -p "$OUT"
case $scenario in
    fanin-q0) args="fan-in --publishers 50 --subscribers 1 --qos 0" ;;
    fanin-q1) args="fan-in --publishers 50 --subscribers 1 --qos 1" ;;
    p2p-q0) args="p2p --pairs 500 --qos 0" ;;
    p2p-q1) args="p2p --pairs 500 --qos 1" ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
case $broker in
    shardmq) RUST_LOG=warn $RT taskset -c 0 "$binary" --listen "127.0.0.1:$PORT" --shards 1 >/dev/null 2>"$OUT/broker.log" & ;;
    mosquitto)
        printf '%s\n' "listener $PORT 127.0.0.1" "allow_anonymous true" "persistence false" \
            "max_connections -1" "set_tcp_nodelay true" "max_queued_messages 100000" >"$OUT/mosquitto.conf"
        $RT taskset -c 0 mosquitto -c "$OUT/mosquitto.conf" >"$OUT/broker.log" 2>&1 & ;;
esac
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
name="$broker-$scenario"
# shellcheck disable=SC2086
$RT taskset -c 1 "$LOADGEN" $args --rate "$RATE" --payload-bytes 64 --warmup 2 --duration $((2 * SECS + 2)) \
    --port "$PORT" --broker-pid "$pid" --name "$name" --out "$OUT" --quiet &
lg=$!
sleep 3
perf stat -x, -o "$OUT/$name.perf" -p "$pid" -e task-clock,context-switches,raw_syscalls:sys_enter,\
syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait,io_uring:io_uring_submit_req,\
io_uring:io_uring_complete,io_uring:io_uring_poll_arm,io_uring:io_uring_queue_async_work,\
io_uring:io_uring_task_add,io_uring:io_uring_local_work_run,sched:sched_wakeup,net:net_dev_queue \
    -- sleep "$SECS"
# CPU time in a second window with perf detached (an attached perf slows every context switch).
sleep 0.5
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
sleep "$SECS"
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
wait $lg || true
msgs=$((RATE * SECS))
tck=$(getconf CLK_TCK)
python3 - "$OUT/$name.perf" "$OUT/$name.json" "$msgs" "$u0" "$s0" "$u1" "$s1" "$tck" "$name" <<'EOF'
import json, sys
perf, summary, msgs, u0, s0, u1, s1, tck, name = sys.argv[1:]
msgs = int(msgs); tck = int(tck)
counts = {}
for line in open(perf):
    parts = line.strip().split(',')
    if len(parts) > 2 and parts[0] and not line.startswith('#'):
        try:
            counts[parts[2]] = float(parts[0])
        except ValueError:
            pass
s = json.load(open(summary))
lat = s.get('latency_us', s.get('latency', {}))
def per(k): return counts.get(k, 0) / msgs
user = (int(u1) - int(u0)) / tck * 1e6 / msgs
system = (int(s1) - int(s0)) / tck * 1e6 / msgs
c = s.get('counters', {})
print(f"{name}: msgs {msgs} cpu-us/msg {user+system:.1f} (user {user:.1f} sys {system:.1f}, perf detached) "
      f"task-clock-us/msg(perf attached) {per('task-clock')*1e3:.1f} syscalls/msg {per('raw_syscalls:sys_enter'):.2f} "
      f"enter/msg {per('syscalls:sys_enter_io_uring_enter'):.2f} epoll_wait/msg {per('syscalls:sys_enter_epoll_wait'):.2f} "
      f"sqe/msg {per('io_uring:io_uring_submit_req'):.2f} cqe/msg {per('io_uring:io_uring_complete'):.2f} "
      f"poll_arm/msg {per('io_uring:io_uring_poll_arm'):.2f} iowq/msg {per('io_uring:io_uring_queue_async_work'):.3f} "
      f"tw_add/msg {per('io_uring:io_uring_task_add'):.2f} cs/msg {per('context-switches'):.2f} "
      f"wakeups/msg {per('sched:sched_wakeup'):.2f} pkts/msg {per('net:net_dev_queue'):.2f}")
l = s['latency_us']
print(f"   p50 {l['p50']} p99 {l['p99']} p99.9 {l['p999']} max {l['max']} lost {s['lost']}")
EOF
