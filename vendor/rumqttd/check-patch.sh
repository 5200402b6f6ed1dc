#!/usr/bin/env bash
# Checks that vendor/rumqttd is rumqttd 0.20.0 as published on crates.io plus
# patches/rollcall.patch, and nothing else (PATCHES.md says why and how).
# Works in a temporary folder only, never in the repo.
#
#   check-patch.sh          apply the patch to the pristine crate, compare
#   check-patch.sh --diff   print upstream -> vendor/rumqttd as a patch, to
#                           regenerate it:  bash vendor/rumqttd/check-patch.sh
#                           --diff > vendor/rumqttd/patches/rollcall.patch
#   check-patch.sh --test   compare, then run the crate's unit tests on the
#                           patched copy (a few minutes: cargo builds rumqttd)
set -euo pipefail

version=0.20.0
# The .crate's SHA-256, as in the crates.io index and a Cargo.lock.
sha256=32399b9dee6e96350790223dd7356bf7f8f15009d7e58e20f4093f1137213e16
# In the published crate but not in vendor/rumqttd.
dropped=(.cargo_vcs_info.json Cargo.lock Cargo.toml.orig examples)
# In vendor/rumqttd but not upstream's.
ours=(LICENSE PATCHES.md check-patch.sh patches)

mode=check
case "${1:-}" in
  "") ;;
  --diff) mode=diff ;;
  --test) mode=test ;;
  *) echo "usage: $0 [--diff | --test]" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
patch=$here/patches/rollcall.patch
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# git diff and git apply below act on plain folders, never on a repository.
unset GIT_DIR GIT_WORK_TREE
export GIT_CEILING_DIRECTORIES=$tmp
fail() { echo "check-patch: $*" >&2; exit 1; }

# The pristine .crate from cargo's cache, fetched through a scratch project
# when it is not there yet.
cache=${CARGO_HOME:-$HOME/.cargo}/registry/cache
find_crate() {
  local f
  for f in "$cache"/*/rumqttd-"$version".crate; do
    [ -f "$f" ] && [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$sha256" ] && { echo "$f"; return; }
  done
  return 0
}
crate=$(find_crate)
if [ -z "$crate" ]; then
  mkdir -p "$tmp/fetch/src"
  touch "$tmp/fetch/src/lib.rs"
  cat >"$tmp/fetch/Cargo.toml" <<EOF
[package]
name = "fetch-rumqttd"
version = "0.0.0"
edition = "2021"

[dependencies]
rumqttd = { version = "=$version", default-features = false }
EOF
  # The workspace's lock keeps the other downloads to what is cached already.
  [ -f "$here/../../Cargo.lock" ] && cp "$here/../../Cargo.lock" "$tmp/fetch/"
  cargo fetch --quiet --manifest-path "$tmp/fetch/Cargo.toml" \
    --target "$(rustc -vV | sed -n 's/^host: //p')" ||
    fail "cargo could not fetch rumqttd $version"
  crate=$(find_crate)
  [ -n "$crate" ] || fail "rumqttd-$version.crate with SHA-256 $sha256 not in $cache"
fi

# a: upstream less what we dropped; b: vendor/rumqttd less what we added.
mkdir "$tmp/a" "$tmp/b"
tar -xzf "$crate" -C "$tmp/a" --strip-components=1
for f in "${dropped[@]}"; do rm -rf "${tmp:?}/a/$f"; done
cp -R "$here/." "$tmp/b"
for f in "${ours[@]}"; do rm -rf "${tmp:?}/b/$f"; done

if [ "$mode" = diff ]; then
  echo "# rumqttd $version (crates.io) -> vendor/rumqttd: the changes PATCHES.md"
  echo "# lists. Checked by check-patch.sh, which also prints it anew (--diff)."
  (cd "$tmp" && git diff --no-index --no-color --no-ext-diff \
    --src-prefix= --dst-prefix= a b) || [ $? -eq 1 ]
  exit 0
fi

[ -f "$patch" ] || fail "$patch is missing"
cp -R "$tmp/a" "$tmp/patched"
(cd "$tmp/patched" && git apply --whitespace=nowarn -p1 "$patch") ||
  fail "patches/rollcall.patch no longer applies to rumqttd $version"
if ! diff -r "$tmp/patched" "$tmp/b" >"$tmp/drift"; then
  sed -e "s|$tmp/patched|upstream+patch|g" -e "s|$tmp/b|vendor/rumqttd|g" "$tmp/drift" | head -n 40 >&2
  fail "vendor/rumqttd differs from rumqttd $version + patches/rollcall.patch (above).
Describe the change in PATCHES.md, then regenerate the patch:
  bash vendor/rumqttd/check-patch.sh --diff > vendor/rumqttd/patches/rollcall.patch"
fi
echo "check-patch: vendor/rumqttd is rumqttd $version + patches/rollcall.patch"

if [ "$mode" = test ]; then
  # The crate is outside the workspace, so it is tested on its own, in the
  # copy, with the workspace's lock for the versions it already builds with.
  [ -f "$here/../../Cargo.lock" ] && cp "$here/../../Cargo.lock" "$tmp/patched/"
  (cd "$tmp/patched" && cargo test --no-default-features --lib)
fi
