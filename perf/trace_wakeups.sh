#!/usr/bin/env bash
# Records what one shard does around its sleeps while a client runs: io_uring submissions, completions and
# waits, the shard's epoll/recvfrom/close/fcntl syscalls, and (for a binary with symbols) uprobes on the read
# pump (`readiness::poll_ready`, `Doorbell::arm`) and glommio's `Parker::park` / `run_task_queues`.
# Then lists every sleep of the shard that lasted over 0.3 s, and whether data was waiting when it woke.
# This is how perf/STALL.md was found. Needs root (tracefs, uprobes); Linux only.
#
# usage: perf/trace_wakeups.sh BROKER_BINARY OUT_TRACE [--strace] -- CLIENT COMMAND...
#   The broker runs with one shard on CPU 0; the client command runs on CPU 1 with $PORT set, e.g.
#   perf/trace_wakeups.sh target/debug/shardmq /tmp/stall.trace -- \
#       sh -c 'python3 ../shared/repro/paho_latency.py $PORT 10 500 5 1'
#   --strace runs the broker under `strace -f -o /dev/null`, which slows its syscalls and makes races show.
set -euo pipefail

binary=$(readlink -f "$1"); out=$2; shift 2
use_strace=""
if [ "${1:-}" = "--strace" ]; then use_strace=1; shift; fi
[ "${1:-}" = "--" ] && shift

T=/sys/kernel/tracing
mounted_here=""
if [ ! -d "$T/events" ]; then mount -t tracefs nodev "$T"; mounted_here=1; fi
probe_file=$(mktemp /tmp/trace-wakeups-bin.XXXXXX)
cp "$binary" "$probe_file"; chmod +x "$probe_file"   # uprobes pin the file: a rebuild meanwhile must not disturb them

cleanup() {
    echo 0 > "$T/tracing_on"; echo 0 > "$T/events/enable"; echo > "$T/set_event_pid"
    echo > "$T/uprobe_events" 2>/dev/null || true
    [ -n "${broker_pid:-}" ] && kill "$broker_pid" 2>/dev/null || true
    [ -n "${launcher_pid:-}" ] && wait "$launcher_pid" 2>/dev/null || true
    rm -f "$probe_file"
    if [ -n "$mounted_here" ]; then umount "$T"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM PIPE

# File offset of a symbol (its address minus the text segment's address-to-offset shift).
symbol_offset() {
    local address shift
    address=$(nm "$probe_file" 2>/dev/null | grep -E "$1" | head -1 | cut -d' ' -f1) || true
    [ -z "$address" ] && return 1
    shift=$(readelf -lW "$probe_file" | awk '$1 == "LOAD" && $8 == "E" { print $3 " " $2; exit }')
    printf '0x%x' $(( 0x$address - (${shift% *} - ${shift#* }) ))
}
for probe in "poll_ready readiness10poll_ready" "doorbell_arm Doorbell3arm" "park 7parking6Parker4park" \
             "run_task_queues 13LocalExecutor15run_task_queues"; do
    name=${probe% *}; pattern=${probe#* }
    if offset=$(symbol_offset "$pattern"); then
        echo "p:shardmq/$name $probe_file:$offset" >> "$T/uprobe_events"
    fi
done

echo 0 > "$T/tracing_on"; echo > "$T/trace"; echo 16384 > "$T/buffer_size_kb"
for event in io_uring_submit_req io_uring_complete io_uring_poll_arm io_uring_task_add io_uring_cqring_wait; do
    echo 1 > "$T/events/io_uring/$event/enable"
done
for event in sys_enter_epoll_wait sys_enter_io_uring_enter sys_exit_io_uring_enter sys_enter_close \
              sys_enter_fcntl sys_enter_recvfrom sys_exit_recvfrom; do
    echo 1 > "$T/events/syscalls/$event/enable"
done
[ -d "$T/events/shardmq" ] && echo 1 > "$T/events/shardmq/enable"

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PORT
if [ -n "$use_strace" ]; then
    taskset -c 0 strace -f -o /dev/null "$probe_file" --listen "127.0.0.1:$PORT" --shards 1 >/dev/null 2>&1 &
    launcher_pid=$!; sleep 3; broker_pid=$(pgrep -P "$launcher_pid")
else
    taskset -c 0 "$probe_file" --listen "127.0.0.1:$PORT" --shards 1 >/dev/null 2>&1 &
    launcher_pid=$!; broker_pid=$launcher_pid; sleep 2
fi
ls "/proc/$broker_pid/task" | tr '\n' ' ' > "$T/set_event_pid"
echo 1 > "$T/tracing_on"
taskset -c 1 "$@"
echo 0 > "$T/tracing_on"
cp "$T/trace" "$out"
echo "load average $(cut -d' ' -f1 /proc/loadavg); trace in $out"

python3 - "$out" <<'EOF'
import re, sys
events = []
for line in open(sys.argv[1]):
    match = re.search(r'\s(\d+\.\d+): (.*)$', line)
    if match:
        events.append((float(match.group(1)), match.group(2)))
for k, (at, text) in enumerate(events):
    if 'min_complete: 1' not in text or 'sys_io_uring_enter(' not in text:
        continue
    end = next((j for j in range(k + 1, len(events)) if 'sys_io_uring_enter ->' in events[j][1]), None)
    if end is None or events[end][0] - at < 0.3:
        continue
    park = max((i for i in range(k) if events[i][1].startswith('park')), default=k)
    last_run = max((i for i in range(park) if events[i][1].startswith('run_task_queues')), default=park)
    pump_ran = any(e[1].startswith('poll_ready') for e in events[last_run:park])
    timer_fired = any('result -62' in e[1] for e in events[max(0, last_run - 6):last_run])
    first = next((e[1] for e in events[k:end + 1] if 'io_uring_complete' in e[1]), '')
    woken_by_timer = 'result -62' in first
    returned = [re.search(r'sys_recvfrom -> 0x([0-9a-f]+)', e[1]) for e in events[end:end + 80]]
    data = sum(1 for r in returned if r and 0 < int(r.group(1), 16) < 1 << 63)
    verdict = 'STALL: input waited for the timer' if woken_by_timer and data else 'idle'
    print(f"{at:.6f} slept {events[end][0] - at:.3f} s, woken by {'a timer' if woken_by_timer else 'I/O'}; "
          f"before it: preempt timer fired {timer_fired}, pump polled {pump_ran}; "
          f"reads with data after waking: {data} -> {verdict}")
EOF
