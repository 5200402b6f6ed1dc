#!/usr/bin/env bash
# A rollcall service written with nothing but mosquitto-clients, bash and
# python3: a tiny message board that answers roll-calls for its host.
#
#   HOST=pizero1 BROKER_HOST=127.0.0.1 BROKER_PORT=1883 examples/foreign_service.sh
#   examples/foreign_service.sh pizero1 127.0.0.1 1883        (same, as arguments)
#
# What it does (docs/protocol.md explains each step):
#   1. publishes its self-description, retained, on /{host}/board/$description,
#      so the host's agent lists "board" among the host's apps;
#   2. serves its one interface: a message published on /{host}/board/set/message
#      is published again, retained, on /{host}/board/message;
#   3. hears every host report on /udp/report and, for reports naming its own
#      host, answers on the report's `topic`: the report, unchanged (its `id`
#      included), plus `function`, the flat fields and `interfaces`.
#
# Environment: HOST (default: this machine's hostname), BROKER_HOST (127.0.0.1),
# BROKER_PORT (1883), ROOT (topic root, default "" for the leading-slash topics).
# Needs mosquitto_sub, mosquitto_pub and python3. Stop it with Ctrl-C.
set -euo pipefail

HOST=${1:-${HOST:-$(hostname)}}
BROKER_HOST=${2:-${BROKER_HOST:-127.0.0.1}}
BROKER_PORT=${3:-${BROKER_PORT:-1883}}
ROOT=${ROOT:-}
FUNCTION=board
BASE="$ROOT/$HOST/$FUNCTION"
MQTT=(-h "$BROKER_HOST" -p "$BROKER_PORT")

# The self-description: the four lists, each entry a topic with its type.
DESCRIPTION=$(python3 -c '
import json, sys
base, function = sys.argv[1], sys.argv[2]
print(json.dumps({
    "function": function,
    "doc": "a message board: what is set is published again, retained",
    "interfaces": {
        "inputs":    [{"name": "set", "topic": base + "/set/message", "type": "string",
                       "doc": "the new message"}],
        "outputs":   [{"name": "message", "topic": base + "/message", "type": "string",
                       "retained": True, "doc": "the current message"}],
        "functions": [],
        "controls":  [],
    },
}, separators=(",", ":")))
' "$BASE" "$FUNCTION")

PIDS=()
cleanup() {
    local status=${1:-$?}
    trap - EXIT INT TERM
    # An empty retained payload removes the description: the agent stops listing us.
    mosquitto_pub "${MQTT[@]}" -q 1 -r -n -t "$BASE/\$description" || true
    ((${#PIDS[@]} == 0)) || kill "${PIDS[@]}" 2>/dev/null || true
    exit "$status"
}
trap cleanup EXIT
trap 'cleanup 0' INT TERM

# Start both subscribers, then announce ourselves.
exec {SETS}< <(exec mosquitto_sub "${MQTT[@]}" -q 1 -t "$BASE/set/message")
PIDS+=($!)
exec {REPORTS}< <(exec mosquitto_sub "${MQTT[@]}" -q 1 -t "$ROOT/udp/report")
PIDS+=($!)
mosquitto_pub "${MQTT[@]}" -q 1 -r -t "$BASE/\$description" -m "$DESCRIPTION"
echo "board: serving $BASE on $BROKER_HOST:$BROKER_PORT" >&2

# 2. The interface: set/message in, message out (retained).
while IFS= read -r -u "$SETS" message; do
    mosquitto_pub "${MQTT[@]}" -q 1 -r -t "$BASE/message" -m "$message"
done &
PIDS+=($!)

# 3. The roll-call: one host report per line; python3 prints the answer's topic
# on one line and the answer on the next, or nothing when the report is for
# another host (several hosts may share one broker).
while IFS= read -r -u "$REPORTS" report; do
    reply=$(printf '%s' "$report" | python3 -c '
import json, random, sys, time
host, description = sys.argv[1], json.loads(sys.argv[2])
try:
    report = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
if not isinstance(report, dict) or report.get("hostname") != host or "topic" not in report:
    sys.exit(0)
# Spread the answers of many services over the window the roll-call asked for.
window_ms = report.get("window_ms") or 0
if isinstance(window_ms, int) and 0 < window_ms <= 60000:
    time.sleep(random.uniform(0, window_ms) / 1000)
answer = dict(report)                  # everything the report had, id included
answer["function"] = description["function"]
ifs = description["interfaces"]
# The flat fields of the notes: one topic (or the narrowest filter) per list.
answer["inputs"] = ifs["inputs"][0]["topic"]
answer["outputs"] = ifs["outputs"][0]["topic"]
answer["interfaces"] = ifs
print(report["topic"])
print(json.dumps(answer, separators=(",", ":")))
' "$HOST" "$DESCRIPTION") || continue
    [ -n "$reply" ] || continue
    topic=${reply%%$'\n'*}
    answer=${reply#*$'\n'}
    mosquitto_pub "${MQTT[@]}" -q 1 -t "$topic" -m "$answer"
    echo "board: answered roll-call on $topic" >&2
done
