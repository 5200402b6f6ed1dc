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
# With TOGETHER=1 the binaries' agents run at the same time instead, on one
# broker, and are measured over the same ROUNDS windows: what changes on
# the machine from one window to the next (on this VM an idle agent's CPU
# moves by 20 % between windows a minute apart) then falls on all of them
# in the same window, so small differences between binaries show.
#
# Usage: bench/idle_wakeups.sh BINARY [BINARY...]
#   SECS=30 SETTLE_S=5 ROUNDS=2 TOGETHER=0
#   AGENT_CONFIG=/work/shared/bench/rollcall/agent.toml
# Loopback only; the processes it starts are stopped by PID and its
# temporary folder removed on exit.
set -euo pipefail

(($#)) || { echo "usage: $0 BINARY [BINARY...]" >&2; exit 2; }
SECS=${SECS:-30}
SETTLE_S=${SETTLE_S:-5}
ROUNDS=${ROUNDS:-2}
TOGETHER=${TOGETHER:-0}
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

# start_broker DIR: a stock Mosquitto on a free port; prints the port.
start_broker() {
    local port
    port=$(free_port)
    printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$1/mosquitto.conf"
    mosquitto -c "$1/mosquitto.conf" >"$1/mosquitto.log" 2>&1 &
    echo "$!" >"$1/mosquitto.pid"
    wait_port "$port"
    echo "$port"
}

# start_agent BINARY PORT DIR NAME: the agent, on the broker at PORT.
start_agent() {
    {
        echo "broker = \"mqtt://127.0.0.1:$2\""
        echo "hostname = \"$4\""
        echo 'udp_bind = "127.0.0.1"'
        echo 'udp_port = 0'
        echo "state_dir = \"$3/state-$4\""
        echo 'sim = true'
        cat "$AGENT_CONFIG"
    } >"$3/agent-$4.toml"
    "$1" agent --config "$3/agent-$4.toml" >"$3/agent-$4.log" 2>&1 &
    echo "$!" >"$3/agent-$4.pid"
}

# report BINARY SECS "CPU0 WAKE0" "CPU1 WAKE1": one line.
report() {
    python3 - "$@" <<'EOF'
import sys
bin_, secs = sys.argv[1], float(sys.argv[2])
(c0, w0), (c1, w1) = (map(int, a.split()) for a in sys.argv[3:5])
print(f"{bin_}: cpu {100 * (c1 - c0) / 1e9 / secs:.3f} % of one core, "
      f"{(w1 - w0) / secs:.1f} wake-ups/s, {(c1 - c0) / 1e3 / max(w1 - w0, 1):.0f} us a wake-up")
EOF
}

# The processes a run started, by the PID files it wrote: for the clean-up.
started() {
    cat "$1"/*.pid
}

run() {
    local bin=$1 dir port agent s0 s1
    dir=$(mktemp -d "$TMP/run.XXXX")
    port=$(start_broker "$dir")
    start_agent "$bin" "$port" "$dir" idle
    mapfile -t -O "${#PIDS[@]}" PIDS < <(started "$dir")
    agent=$(cat "$dir/agent-idle.pid")
    sleep "$SETTLE_S"   # the measured window starts after start-up, by design
    s0=$(snapshot "$agent")
    sleep "$SECS"       # the window itself
    s1=$(snapshot "$agent")
    kill $(started "$dir")
    wait 2>/dev/null || true
    report "$bin" "$SECS" "$s0" "$s1"
}

together() {
    local dir port i round
    local -a agents s0
    dir=$(mktemp -d "$TMP/run.XXXX")
    port=$(start_broker "$dir")
    for ((i = 0; i < $#; i++)); do
        start_agent "${@:i+1:1}" "$port" "$dir" "idle$i"
        agents[i]=$(cat "$dir/agent-idle$i.pid")
    done
    mapfile -t -O "${#PIDS[@]}" PIDS < <(started "$dir")
    sleep "$SETTLE_S"
    for ((round = 1; round <= ROUNDS; round++)); do
        for i in "${!agents[@]}"; do s0[i]=$(snapshot "${agents[i]}"); done
        sleep "$SECS"   # the window itself, the same for every agent
        echo "round $round:"
        for i in "${!agents[@]}"; do
            report "${@:i+1:1}" "$SECS" "${s0[i]}" "$(snapshot "${agents[i]}")"
        done
    done
}

if ((TOGETHER)); then
    together "$@"
else
    for ((round = 1; round <= ROUNDS; round++)); do
        for bin in "$@"; do run "$bin"; done
    done
fi
