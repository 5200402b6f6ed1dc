#!/usr/bin/env bash
# bench/one_host_scan.sh: how long a one-host `rollcall scan` takes on a
# private Mosquitto, stock (Debian's defaults) and tuned (`set_tcp_nodelay
# true`), one after the other in one run. One simulated agent, SCANS scans
# each (`--window-ms 0 --expect 1`, through the loopback broadcast
# 127.255.255.255); prints the time from the roll-call to its last answer
# (the report's "last answer after N ms") and the command's own wall time, p50 / p95 / max.
#
#   cargo build --release -p rollcall
#   bench/one_host_scan.sh            # SCANS [50], ROLLCALL_BIN [target/release/rollcall]
#
# Loopback only; free ports; every process it starts is stopped by PID.
set -euo pipefail

BIN=${ROLLCALL_BIN:-$PWD/target/release/rollcall}
SCANS=${SCANS:-50}
[[ -x $BIN ]] || { echo "no $BIN: cargo build --release -p rollcall" >&2; exit 1; }
command -v mosquitto >/dev/null || { echo "needs mosquitto: apt-get install -y mosquitto" >&2; exit 1; }

WORK=$(mktemp -d /tmp/one-host-scan.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, int(sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"
}

# p50 / p95 / max of the numbers on stdin (nearest rank).
stats() {
    sort -n | awk '{v[NR]=$1} END {
        p50=v[int((NR*50+99)/100)]; p95=v[int((NR*95+99)/100)];
        printf "p50 %s  p95 %s  max %s  (n=%d)", p50, p95, v[NR], NR }'
}

for kind in stock tuned; do
    port=$(free_port 1)         # SOCK_STREAM
    udp=$(free_port 2)          # SOCK_DGRAM
    {
        echo "listener $port 127.0.0.1"
        echo "allow_anonymous true"
        [[ $kind == tuned ]] && echo "set_tcp_nodelay true"
    } >"$WORK/$kind.conf"
    mosquitto -c "$WORK/$kind.conf" >"$WORK/$kind.mosquitto.log" 2>&1 &
    PIDS+=($!)
    broker=mqtt://127.0.0.1:$port
    "$BIN" agent --sim --hostname solo --broker "$broker" --udp-port "$udp" \
        --state-dir "$WORK/$kind.state" >"$WORK/$kind.agent.log" 2>&1 &
    PIDS+=($!)
    # Ready when a scan finds the host (bounded: 30 tries).
    for (( i = 0; i < 30; i++ )); do
        "$BIN" scan --broker "$broker" --udp-port "$udp" --broadcast 127.255.255.255 \
            --window-ms 0 --expect 1 --wait-ms 1000 >/dev/null 2>&1 && break
        sleep 0.1
    done
    (( i < 30 )) || { echo "$kind: the agent never answered (log: $WORK/$kind.agent.log)" >&2; exit 1; }
    : >"$WORK/$kind.last" ; : >"$WORK/$kind.wall"
    for (( n = 0; n < SCANS; n++ )); do
        # Paced 100 ms apart: an agent answers at most 20 roll-calls a
        # second (max_rollcalls_per_s) and drops the rest.
        sleep 0.1
        start=$(date +%s%N)
        "$BIN" scan --broker "$broker" --udp-port "$udp" --broadcast 127.255.255.255 \
            --window-ms 0 --expect 1 --wait-ms 2000 >"$WORK/scan.txt"
        end=$(date +%s%N)
        # The report's first line: "roll-call N: 1 hosts, S services, last answer after T ms ..."
        sed -n 's/.*last answer after \([0-9]*\) ms.*/\1/p' "$WORK/scan.txt" | grep . >>"$WORK/$kind.last" \
            || { echo "$kind: no 'last answer' in the report:" >&2; cat "$WORK/scan.txt" >&2; exit 1; }
        echo $(( (end - start) / 1000000 )) >>"$WORK/$kind.wall"
    done
    echo "$kind mosquitto: last answer (ms) $(stats <"$WORK/$kind.last");  scan command wall (ms) $(stats <"$WORK/$kind.wall")"
    kill "${PIDS[-1]}" "${PIDS[-2]}" 2>/dev/null || true
    wait "${PIDS[-1]}" "${PIDS[-2]}" 2>/dev/null || true
    PIDS=()
done
