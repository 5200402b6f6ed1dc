#!/usr/bin/env bash
# bench/side_by_side.sh: runs the shared side-by-side harness (flyte/mqtt-io
# and rollcall on one stock Mosquitto, one paho-mqtt client) from a private
# copy, adapted in two places that the read-only original cannot be:
#
#   1. its wait for the agent matches `$state` = `online` exactly, and an
#      agent now says `online N` (its session number, docs/protocol.md
#      section 4): the copy also accepts `online ` followed by anything;
#   2. with TUNED=1 the private broker gets `set_tcp_nodelay true`, for the
#      tuned second column BENCHMARKS.md gives next to the stock one.
#
# Everything else (what is measured, how, the summary) is the shared
# harness's own. Run from the workspace root after
# `cargo build --release -p rollcall`:
#
#   bench/side_by_side.sh                  # stock Mosquitto, one run
#   RUNS=3 TUNED=1 bench/side_by_side.sh   # tuned broker, three runs
#
# SHARED_BENCH [../shared/bench] is where the harness lives; its own
# variables (RUNS, MQTTIO_VENV, OUT_DIR...) pass through.
set -euo pipefail

SHARED_BENCH=${SHARED_BENCH:-$PWD/../shared/bench}
[[ -x $SHARED_BENCH/run_side_by_side.sh ]] \
    || { echo "no harness at $SHARED_BENCH (set SHARED_BENCH)" >&2; exit 1; }
[[ -x target/release/rollcall ]] \
    || { echo "run from the workspace root after: cargo build --release -p rollcall" >&2; exit 1; }

COPY=$(mktemp -d /tmp/rollcall-side-by-side.XXXXXX)
trap 'rm -rf "$COPY"' EXIT
cp -r "$SHARED_BENCH/." "$COPY/"
chmod -R u+w "$COPY"

# patch FILE OLD NEW: replaces one exact line fragment, or fails loudly when
# the harness has changed and the fragment is gone.
patch_line() {
    local file=$1 old=$2 new=$3
    grep -qF -- "$old" "$file" || { echo "$file no longer contains: $old" >&2; exit 1; }
    OLD=$old NEW=$new perl -0pi -e 's/\Q$ENV{OLD}\E/$ENV{NEW}/' "$file"
}

patch_line "$COPY/lib.sh" '[[ $got == "$want" ]] && return 0' \
    '[[ $got == "$want" || $got == "$want "* ]] && return 0'
if [[ ${TUNED:-0} == 1 ]]; then
    patch_line "$COPY/lib.sh" 'allow_anonymous true' $'allow_anonymous true\nset_tcp_nodelay true'
fi

ROLLCALL_BIN=${ROLLCALL_BIN:-$PWD/target/release/rollcall} "$COPY/run_side_by_side.sh"
