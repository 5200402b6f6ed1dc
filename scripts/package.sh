#!/usr/bin/env bash
# Builds rollcall's Debian packages (docs/packaging.md): the man pages,
# completions and default agent.toml from the binary's own clap definitions,
# then for each architecture asked for the binary (cross builds with
# cargo-zigbuild, glibc pinned to Raspberry Pi OS Bookworm's 2.36), its unit
# tests of rollcall-proto, rollcall-hw and rollcall-services under qemu-user,
# and the .deb (cargo-deb). Packages land in target/debian/.
#
#   scripts/package.sh                 # amd64 arm64 armhf
#   scripts/package.sh amd64           # just one (amd64, arm64, armhf, armv7)
#   ROLLCALL_PACKAGE_TESTS=0 scripts/package.sh arm64   # no qemu tests
#
# armhf is the ARMv6 binary (arm-unknown-linux-gnueabihf), which runs on
# every Pi with a 32-bit Raspberry Pi OS, the Pi Zero and Pi 1 included;
# armv7 builds the ARMv7 binary (Pi 2 and later, Debian's own armhf) into
# target/debian/armv7/ instead.
#
# Tools, installed when missing (as root): cargo-deb (crates.io),
# cargo-zigbuild and ziglang (PyPI), qemu-user-static, binutils and the
# targets' C libraries for qemu (Debian). ARMv6: when rustup has no
# prebuilt std for arm-unknown-linux-gnueabihf, std is built from rust-src
# (-Zbuild-std, with RUSTC_BOOTSTRAP=1 on the stable toolchain).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0

GLIBC=2.36 # Raspberry Pi OS Bookworm and Debian 12
PROFILE=deb
TESTS=${ROLLCALL_PACKAGE_TESTS:-1}
arches=("$@")
((${#arches[@]})) || arches=(amd64 arm64 armhf)

say() { printf '\n== %s\n' "$*"; }

need_apt=()
for arch in "${arches[@]}"; do
  case $arch in
  amd64) ;;
  arm64) command -v qemu-aarch64-static >/dev/null || need_apt+=(qemu-user-static)
    [ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || need_apt+=(libc6-arm64-cross) ;;
  armhf | armv7) command -v qemu-arm-static >/dev/null || need_apt+=(qemu-user-static)
    [ -e /usr/arm-linux-gnueabihf/lib/ld-linux-armhf.so.3 ] || need_apt+=(libc6-armhf-cross) ;;
  *) echo "unknown architecture $arch (amd64, arm64, armhf, armv7)" >&2; exit 2 ;;
  esac
done
command -v readelf >/dev/null || need_apt+=(binutils)
if ((${#need_apt[@]})); then
  say "installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
if [[ " ${arches[*]} " =~ (arm64|armhf|armv7) ]]; then
  command -v cargo-zigbuild >/dev/null && python3 -m ziglang version >/dev/null 2>&1 ||
    pip install ziglang cargo-zigbuild || pip install --break-system-packages ziglang cargo-zigbuild
fi

say "man pages, completions and agent.toml from the clap definitions"
scripts/package-assets.sh

# Builds the binary for Rust target $1 (cargo-zigbuild for cross targets),
# runs the unit tests under $2 (a qemu-user binary, or "" for native), and
# packages it for Debian architecture $3 into $4.
package() {
  local target=$1 qemu=$2 debarch=$3 out=$4
  local build=(cargo build) test=(cargo test) zigtarget=$target extra=() env=()
  if [ "$target" != x86_64-unknown-linux-gnu ]; then
    build=(cargo-zigbuild zigbuild) test=(cargo-zigbuild test)
    zigtarget=$target.$GLIBC
    if ! rustup target list --installed | grep -qx "$target" &&
      ! rustup target add "$target" 2>/dev/null; then
      # No prebuilt std to download (rustup answered 404 for
      # arm-unknown-linux-gnueabihf here): build std for the target.
      rustup component add rust-src
      extra=(-Zbuild-std)
      env=(RUSTC_BOOTSTRAP=1)
    fi
  fi
  say "$target: build (profile $PROFILE)"
  local start=$SECONDS
  env "${env[@]}" "${build[@]}" -p rollcall --profile "$PROFILE" --target "$zigtarget" "${extra[@]}"
  echo "built in $((SECONDS - start)) s"
  local bin=${CARGO_TARGET_DIR:-target}/$target/$PROFILE/rollcall
  readelf -A "$bin" | grep -E 'Tag_CPU_arch:|Tag_ABI_VFP_args' || true
  if [ "$target" = arm-unknown-linux-gnueabihf ] && ! readelf -A "$bin" | grep -q 'Tag_CPU_arch: v6'; then
    echo "$bin is not an ARMv6 binary" >&2
    exit 1
  fi
  # Natively these tests are part of `cargo test --workspace` (.ci/run).
  if [ "$TESTS" = 1 ] && [ -n "$qemu" ]; then
    say "$target: unit tests of rollcall-proto, rollcall-hw, rollcall-services under $qemu"
    local var sysroot
    var=CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_RUNNER
    # Debian's cross C library for the target (its ld.so and libc): the
    # test binaries are dynamically linked, like the packaged one.
    case $target in
    aarch64-*) sysroot=/usr/aarch64-linux-gnu ;;
    *) sysroot=/usr/arm-linux-gnueabihf ;;
    esac
    local runner=("$var=$qemu -L $sysroot")
    env "${env[@]}" "${runner[@]}" "${test[@]}" --target "$zigtarget" "${extra[@]}" \
      -p rollcall-proto -p rollcall-hw -p rollcall-services --lib
  fi
  say "$target: package ($debarch)"
  mkdir -p "$out"
  # Stripped by the profile already; cargo-deb's strip knows the host's ELF only.
  local deb
  deb=$(cargo deb -p rollcall --no-build --no-strip --profile "$PROFILE" --target "$target" \
    --output "$out" | tail -n1)
  scripts/check-deb.sh "$deb"
  ls -l "$bin" "$deb"
}

for arch in "${arches[@]}"; do
  case $arch in
  amd64) package x86_64-unknown-linux-gnu "" amd64 target/debian ;;
  arm64) package aarch64-unknown-linux-gnu qemu-aarch64-static arm64 target/debian ;;
  armhf) package arm-unknown-linux-gnueabihf qemu-arm-static armhf target/debian ;;
  armv7) package armv7-unknown-linux-gnueabihf qemu-arm-static armhf target/debian/armv7 ;;
  esac
done

say "packages"
ls -l target/debian/*.deb target/debian/armv7/*.deb 2>/dev/null || true
