#!/usr/bin/env bash
# Checks a built rollcall .deb without installing it: the files it must
# carry, its conffiles, that the agent's unit is enabled and started on
# install and the hub's is not, that the postinst makes the user, the
# binary's architecture, and the units (systemd-analyze verify).
# scripts/package.sh runs it on every package; .ci/run on an amd64 one.
# Usage: scripts/check-deb.sh FILE.deb
set -euo pipefail
deb=$1
fail() {
  echo "check-deb: $deb: $*" >&2
  exit 1
}

contents=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|')
for path in /usr/bin/rollcall \
  /usr/lib/systemd/system/rollcall-agent.service /usr/lib/systemd/system/rollcall-hub.service \
  /etc/rollcall/agent.toml /etc/default/rollcall-hub \
  /usr/lib/sysusers.d/rollcall.conf /usr/lib/tmpfiles.d/rollcall.conf /usr/lib/udev/rules.d/60-rollcall.rules \
  /usr/share/man/man1/rollcall.1.gz /usr/share/man/man1/rollcall-agent.1.gz \
  /usr/share/man/man1/rollcall-hub.1.gz \
  /usr/share/bash-completion/completions/rollcall \
  /usr/share/zsh/vendor-completions/_rollcall \
  /usr/share/fish/vendor_completions.d/rollcall.fish; do
  grep -qx "$path" <<<"$contents" || fail "missing $path"
done
# Neither the hidden packaging subcommand nor clap's `help` gets a page.
if grep -qE 'rollcall-(assets|help)\.1' <<<"$contents"; then fail "a man page for assets or help"; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -e "$deb" "$work/control"
dpkg-deb -x "$deb" "$work/root"
diff <(sort "$work/control/conffiles") <(printf '/etc/default/rollcall-hub\n/etc/rollcall/agent.toml\n') ||
  fail "conffiles are not agent.toml and rollcall-hub"
post=$work/control/postinst
grep -q 'systemd-sysusers.*rollcall.conf' "$post" || fail "postinst does not run systemd-sysusers"
grep -q 'systemd-tmpfiles.*--create rollcall.conf' "$post" || fail "postinst does not make /var/lib/rollcall"
# The agent: enabled on a first install (was-enabled says yes for a unit
# never seen) and started. The hub: enabled only if it was before, never
# started on a first install.
grep -q 'deb-systemd-helper enable rollcall-agent.service' "$post" || fail "postinst does not enable the agent"
grep -qF 'deb-systemd-invoke $_dh_action rollcall-agent.service' "$post" || fail "postinst does not start the agent"
grep -q 'deb-systemd-helper debian-installed rollcall-hub.service' "$post" || fail "postinst enables the hub on install"
if grep -qF 'deb-systemd-invoke $_dh_action rollcall-hub.service' "$post"; then fail "postinst starts the hub"; fi
[ "$(grep -c 'deb-systemd-helper enable' "$post")" -eq 2 ] || fail "postinst has its generated part more than once"
grep -q '^Depends:.*systemd' "$work/control/control" || fail "no dependency on systemd (sysusers)"
grep -q '^state_dir = "/var/lib/rollcall"' "$work/root/etc/rollcall/agent.toml" || fail "agent.toml without state_dir"

arch=$(dpkg-deb -f "$deb" Architecture)
machine=$(readelf -h "$work/root/usr/bin/rollcall" | awk -F: '/Machine:/ {gsub(/^ +/, "", $2); print $2}')
case $arch in
amd64) want='Advanced Micro Devices X86-64' ;;
arm64) want=AArch64 ;;
armhf) want=ARM ;;
*) fail "unknown architecture $arch" ;;
esac
[ "$machine" = "$want" ] || fail "binary is for $machine, package for $arch"

if command -v systemd-analyze >/dev/null; then
  # verify wants the ExecStart binary where the unit says: point it at the
  # package's own (the units are checked here, not installed).
  mkdir "$work/units"
  for unit in rollcall-agent.service rollcall-hub.service; do
    sed "s|/usr/bin/rollcall|$work/root/usr/bin/rollcall|" \
      "$work/root/usr/lib/systemd/system/$unit" >"$work/units/$unit"
    out=$(systemd-analyze verify --man=no "$work/units/$unit" 2>&1) ||
      fail "systemd-analyze verify $unit: $out"
    [ -z "$out" ] || echo "$unit: $out"
  done
fi
echo "check-deb: $deb ($arch, $(du -k "$deb" | cut -f1) KiB): ok"
