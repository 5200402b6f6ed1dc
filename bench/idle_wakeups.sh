#!/usr/bin/env bash
# idle_wakeups.sh: an idle agent's CPU and wake-ups, exactly, for issue 12
# goal 2 ("quiet when idle").
#
# Runs each BINARY's `agent` with the side-by-side benchmark's GPIO
# configuration (8 outputs, 10 inputs scanned every 100 ms, simulated chip)
# against a private, stock Mosquitto on a free 127.0.0.1 port, lets it settle
# for SETTLE_S seconds, then over SECS seconds reads, for every thread:
#   CPU:      /proc/PID/task/TID/schedstat field 1 (ns on the CPU: exact,
#             unlike the tick-sampled utime/stime);
#   wake-ups: voluntary_ctxt_switches in /proc/PID/task/TID/status (each is
#             a sleep the thread woke from).
# Binaries are run ROUNDS times, interleaved (all, then all again), so load
# on the machine falls on each alike. Prints one line per run.
#
# Usage: bench/idle_wakeups.sh BINARY [BINARY...]
#   SECS=30 SETTLE_S=5 ROUNDS=2
#   AGENT_CONFIG=/work/shared/bench/rollcall/agent.toml
# Loopback only; the processes it starts are stopped by PID and its
# temporary folder removed on exit.
set -euo pipefail

(($#)) || { echo "usage: $0 BINARY [BINARY...]" >&2; exit 2; }
SECS=${SECS:-30}
SETTLE_S=${SETTLE_S:-5}
ROUNDS=${ROUNDS:-2}
AGENT_CONFIG=${AGENT_CONFIG:-/work/shared/bench/rollcall/agent.toml}
[[ -r $AGENT_CONFIG ]] || { echo "no agent configuration: $AGENT_CONFIG" >&2; exit 2; }
command -v mosquitto >/dev/null || { echo "needs mosquitto" >&2; exit 2; }

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    ((${#PIDS[@]})) && kill "${PIDS[@]}" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT: until something listens there, at most 10 s.
wait_port() {
    local n=200
    until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null; do
        ((--n)) || { echo "nothing listens on $1" >&2; return 1; }
        sleep 0.05
    done
}

# snapshot PID: "cpu_ns wakeups", summed over the process's threads.
snapshot() {
    local cpu=0 wake=0 t
    for t in /proc/"$1"/task/*; do
        cpu=$((cpu + $(cut -d' ' -f1 "$t/schedstat")))
        wake=$((wake + $(awk '/^voluntary_ctxt_switches/ { print $2 }' "$t/status")))
    done
    echo "$cpu $wake"
}

run() {
    local bin=$1 port dir agent broker s0 s1
    dir=$(mktemp -d "$TMP/run.XXXX")
    port=$(free_port)
    printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$dir/mosquitto.conf"
    mosquitto -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
    broker=$!
    PIDS+=("$broker")
    wait_port "$port"
    {
        echo "broker = \"mqtt://127.0.0.1:$port\""
        echo 'udp_bind = "127.0.0.1"'
        echo 'udp_port = 0'
        echo "state_dir = \"$dir/state\""
        echo 'sim = true'
        cat "$AGENT_CONFIG"
    } >"$dir/agent.toml"
    "$bin" agent --config "$dir/agent.toml" >"$dir/agent.log" 2>&1 &
    agent=$!
    PIDS+=("$agent")
    sleep "$SETTLE_S"   # the measured window starts after start-up, by design
    s0=$(snapshot "$agent")
    sleep "$SECS"       # the window itself
    s1=$(snapshot "$agent")
    kill "$agent" "$broker"
    wait "$agent" "$broker" 2>/dev/null || true
    python3 - "$bin" "$SECS" "$s0" "$s1" <<'EOF'
import sys
bin_, secs = sys.argv[1], float(sys.argv[2])
(c0, w0), (c1, w1) = (map(int, a.split()) for a in sys.argv[3:5])
print(f"{bin_}: cpu {100 * (c1 - c0) / 1e9 / secs:.3f} % of one core, "
      f"{(w1 - w0) / secs:.1f} wake-ups/s, {(c1 - c0) / 1e3 / max(w1 - w0, 1):.0f} us a wake-up")
EOF
}

for ((round = 1; round <= ROUNDS; round++)); do
    for bin in "$@"; do run "$bin"; done
done
