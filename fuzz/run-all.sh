#!/usr/bin/env bash
# Builds every fuzz target and runs each for a few seconds over its seeds
# (fuzz/README.md), in a scratch corpus folder that is removed after.
# Usage: fuzz/run-all.sh [SECONDS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-3}
export RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
targets=$(cargo fuzz list)
echo "fuzz: building $(echo "$targets" | wc -l) targets"
cargo fuzz build
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in $targets; do
  dict=()
  case $t in
    gpio_text) dict=(-dict=fuzz/gpio.dict) ;;
    stun | broker_decoder | broker_url) ;;
    *) dict=(-dict=fuzz/json.dict) ;;
  esac
  mkdir -p "$scratch/$t"
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
  echo "fuzz: $t for ${seconds}s"
  cargo fuzz run "$t" "$scratch/$t" "${seeds[@]}" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 "${dict[@]}" 2>"$scratch/$t.log" ||
    { tail -n 40 "$scratch/$t.log" >&2; echo "fuzz: $t failed" >&2; exit 1; }
  grep -E '^(Done|#[0-9]+ *DONE)' "$scratch/$t.log" | tail -n 1 || true
done
echo "fuzz: every target ran without a crash"
