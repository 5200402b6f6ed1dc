#!/usr/bin/env bash
# agent_footprint.sh: the memory footprint (and, optionally, the set->state
# round trip) of one `rollcall agent` binary, as issue 12 goal 6 measures it.
#
# Runs the agent with the side-by-side benchmark's configuration (8 outputs,
# 10 inputs scanned every 100 ms, simulated chip) against a private Mosquitto
# (set_tcp_nodelay true) on a free 127.0.0.1 port, waits IDLE_S seconds, and
# prints ONE line of key=value pairs:
#   label bin_bytes text data bss rss_kb rss_anon_kb rss_file_kb pss_kb
#   pss_anon_kb pss_file_kb threads
#   [rtt_p50_ms rtt_p99_ms rtt_mean_ms cpu_us_per_cmd rss_after_kb]
# With RTT_COMMANDS=N (N > 0) it then runs the shared harness's gpio_rtt.py
# (N sequential QoS 1 set commands, as measure_daemon in
# /work/shared/bench/lib.sh does), adds its p50/p99/mean, the agent's CPU
# (its threads' schedstat) over that run per command, and VmRSS after it.
#
# With IDLE_CPU_S=N (N > 0) it also measures the agent's CPU over N more
# seconds of idling (nothing sent to it; its input scans run) and adds
# idle_cpu_pct (percent of one CPU). With RUNNER="qemu-aarch64-static -L
# /usr/aarch64-linux-gnu" it runs BINARY under that emulator (a cross-built
# binary; the figures are then the emulator's process, emulation included).
#
# Usage: bench/agent_footprint.sh BINARY [LABEL]
#   IDLE_S=5  IDLE_CPU_S=0  RUNNER=  RTT_COMMANDS=0  BENCH_PY=/tmp/mqttio-venv/bin/python (paho-mqtt)
#   AGENT_CONFIG=/work/shared/bench/rollcall/agent.toml
#   BENCH_DIR=/work/shared/bench (where gpio_rtt.py lives)
#   SMAPS_TOP=N: also print the N biggest mappings by RSS (to stderr).
#
# Loopback only; every wait is bounded; the processes it starts are stopped
# by their PIDs and its temporary folder is removed on exit.
set -euo pipefail

BIN=${1:?usage: $0 BINARY [LABEL]}
LABEL=${2:-$(basename "$BIN")}
IDLE_S=${IDLE_S:-5}
RTT_COMMANDS=${RTT_COMMANDS:-0}
IDLE_CPU_S=${IDLE_CPU_S:-0}
read -r -a RUNNER_CMD <<<"${RUNNER:-}"
SMAPS_TOP=${SMAPS_TOP:-0}
BENCH_PY=${BENCH_PY:-/tmp/mqttio-venv/bin/python}
BENCH_DIR=${BENCH_DIR:-/work/shared/bench}
AGENT_CONFIG=${AGENT_CONFIG:-$BENCH_DIR/rollcall/agent.toml}

[[ -x $BIN ]] || { echo "not an executable: $BIN" >&2; exit 2; }
[[ -r $AGENT_CONFIG ]] || { echo "no agent configuration: $AGENT_CONFIG" >&2; exit 2; }

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    local pid i
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || continue
        # Bounded: 5 s for a clean stop, then SIGKILL.
        for (( i = 0; i < 100; i++ )); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { # TCP or UDP ($1): a port on 127.0.0.1 nothing is bound to now
    "$BENCH_PY" -c 'import socket,sys
s = socket.socket(type=socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' "$1"
}

wait_port() { # PORT SECONDS: true once 127.0.0.1:PORT accepts a connection
    "$BENCH_PY" - "$1" "$2" <<'EOF'
import socket, sys, time
port, limit = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < limit:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
EOF
}

# A private broker; a port race with another process is retried.
for try in 1 2 3 4 5; do
    PORT=$(free_port tcp)
    # set_tcp_nodelay: without it a round trip waits ~40 ms on Nagle and a
    # delayed ACK (README.md, "Deploying"), which would hide the agent.
    printf '# one footprint run; loopback only\nlistener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n' \
        "$PORT" >"$TMP/mosquitto.conf"
    mosquitto -c "$TMP/mosquitto.conf" >"$TMP/mosquitto.log" 2>&1 &
    BROKER_PID=$!
    PIDS+=("$BROKER_PID")
    if wait_port "$PORT" 5 && kill -0 "$BROKER_PID" 2>/dev/null; then break; fi
    [[ $try == 5 ]] && { echo "mosquitto did not start: $(tail -n 2 "$TMP/mosquitto.log")" >&2; exit 1; }
done

mkdir "$TMP/state"
"${RUNNER_CMD[@]}" "$BIN" agent --sim --hostname pc01 --broker "mqtt://127.0.0.1:$PORT" \
    --udp-port "$(free_port udp)" --state-dir "$TMP/state" --config "$AGENT_CONFIG" \
    >"$TMP/agent.log" 2>&1 &
AGENT_PID=$!
PIDS=("$AGENT_PID" "${PIDS[@]}")

sleep "$IDLE_S"
kill -0 "$AGENT_PID" 2>/dev/null || { echo "agent exited: $(tail -n 5 "$TMP/agent.log")" >&2; exit 1; }

read -r TEXT DATA BSS _ < <(size "$BIN" | awk 'NR == 2 { print $1, $2, $3 }')
MEM=$(awk '
    FILENAME ~ /status$/ && $1 == "VmRSS:"    { rss = $2 }
    FILENAME ~ /status$/ && $1 == "RssAnon:"  { anon = $2 }
    FILENAME ~ /status$/ && $1 == "RssFile:"  { file = $2 }
    FILENAME ~ /status$/ && $1 == "Threads:"  { thr = $2 }
    FILENAME ~ /smaps_rollup$/ && $1 == "Pss:"      { pss = $2 }
    FILENAME ~ /smaps_rollup$/ && $1 == "Pss_Anon:" { pssanon = $2 }
    FILENAME ~ /smaps_rollup$/ && $1 == "Pss_File:" { pssfile = $2 }
    END { printf "rss_kb=%d rss_anon_kb=%d rss_file_kb=%d pss_kb=%d pss_anon_kb=%d pss_file_kb=%d threads=%d",
                 rss, anon, file, pss, pssanon, pssfile, thr }
' "/proc/$AGENT_PID/status" "/proc/$AGENT_PID/smaps_rollup")
LINE="label=$LABEL bin_bytes=$(stat -c %s "$BIN") text=$TEXT data=$DATA bss=$BSS $MEM"

if (( SMAPS_TOP > 0 )); then
    # Which mappings the resident pages belong to: "Rss kB  path".
    awk '/^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "" ? "[anon]" : $6) " " $2 }
         $1 == "Rss:" { rss[name] += $2 }
         END { for (n in rss) printf "%8d kB  %s\n", rss[n], n }' "/proc/$AGENT_PID/smaps" \
        | sort -rn | head -n "$SMAPS_TOP" >&2
fi

cpu_ns() { # the agent's threads' time on a CPU (schedstat), in ns
    cat /proc/"$AGENT_PID"/task/*/schedstat | awk '{ ns += $1 } END { printf "%d\n", ns }'
}

if (( IDLE_CPU_S > 0 )); then
    # A measuring window, not a wait for a condition: the agent's CPU time
    # over IDLE_CPU_S seconds in which nobody talks to it.
    T0=$(cpu_ns)
    sleep "$IDLE_CPU_S"
    LINE+=" idle_cpu_pct=$(awk -v ns=$(( $(cpu_ns) - T0 )) -v s="$IDLE_CPU_S" 'BEGIN { printf "%.3f", ns / 1e7 / s }')"
fi

if (( RTT_COMMANDS > 0 )); then
    T0=$(cpu_ns)
    "$BENCH_PY" "$BENCH_DIR/gpio_rtt.py" --port "$PORT" --preset rollcall --host-name pc01 \
        --mode seq --commands "$RTT_COMMANDS" --qos 1 --label "$LABEL" --quiet >"$TMP/rtt.json"
    LINE+=" $("$BENCH_PY" -c 'import json,sys
s = json.load(open(sys.argv[1]))["seq"]
print("rtt_p50_ms=%s rtt_p99_ms=%s rtt_mean_ms=%s" % (s.get("p50_ms"), s.get("p99_ms"), s.get("mean_ms")))' "$TMP/rtt.json")"
    # The agent's CPU over the whole gpio_rtt run (its warm-up and priming
    # included, and its input scans meanwhile), per measured command.
    LINE+=" cpu_us_per_cmd=$(( ($(cpu_ns) - T0) / 1000 / RTT_COMMANDS ))"
    LINE+=" rss_after_kb=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$AGENT_PID/status")"
fi
echo "$LINE"
