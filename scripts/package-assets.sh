#!/usr/bin/env bash
# Writes what the Debian package takes from the binary itself into
# target/package-assets/: the man pages and shell completions (the hidden
# `rollcall assets` subcommand, cargo feature `assets`, from the same clap
# definitions as --help) and agent.toml (`rollcall agent --print-config`).
# Run by scripts/package.sh and .ci/run. The host build with `assets` is
# used only here; target/debug/rollcall is built again without it after.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
out=target/package-assets
rm -rf "$out"
bin=${CARGO_TARGET_DIR:-target}/debug   # where cargo puts the host build
cargo build -q -p rollcall --features assets
cp "$bin/rollcall" "$bin/rollcall-assets"
cargo build -q -p rollcall
"$bin/rollcall-assets" assets --out "$out"
"$bin/rollcall-assets" agent --print-config >"$out/agent.toml"
gzip -9n "$out"/man/*.1
