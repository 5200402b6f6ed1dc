#!/usr/bin/env bash
# Builds what the kernel-VM test boots: Debian's own kernel (as an ELF
# vmlinux, which QEMU starts through its PVH entry without the ~3 s of
# emulated decompression), gpio-sim and irq_sim built out of tree from
# Debian's linux-source (Debian's kernel config leaves them out), and a small
# busybox initramfs whose /init mounts the 9p share from the host and runs
# the share's guest.sh.
#
# Usage: prepare.sh OUT_DIR
# Prints three lines on success: KVER=..., KERNEL=..., INITRD=...
# Exit status 3 means "this machine cannot do it" (something to install is
# missing; the message says what), any other failure is a bug.
#
# Needs (Debian): qemu-system-x86 busybox-static cpio xz-utils linux-image-amd64
# linux-headers-amd64 gcc make, and `apt-get download linux-source-X.Y` working,
# or the linux-source .deb already in OUT_DIR/debs.
set -euo pipefail

OUT=${1:?usage: prepare.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# One preparation at a time per folder: two test binaries run at once
# (cargo nextest) would otherwise rebuild the same files under each other.
exec 9>"$OUT/.lock"
flock 9

missing() { echo "cannot prepare the kernel VM: $*" >&2; exit 3; }
log() { echo "[kernel-vm $(date +%T)] $*" >&2; }

# The newest installed kernel that also has its headers (for the modules).
KVER=
for dir in $(ls -d /lib/modules/*/ 2>/dev/null | sort -V -r); do
    k=$(basename "$dir")
    if [ -f "/boot/vmlinuz-$k" ] && [ -d "/lib/modules/$k/build" ]; then KVER=$k; break; fi
done
[ -n "$KVER" ] || missing "no kernel with its headers (apt-get install linux-image-amd64 linux-headers-amd64)"
[ -r "/boot/vmlinuz-$KVER" ] || missing "/boot/vmlinuz-$KVER is not readable (run as root)"
command -v cpio >/dev/null || missing "no cpio (apt-get install cpio)"
command -v xz >/dev/null || missing "no xz (apt-get install xz-utils)"
command -v make >/dev/null && command -v gcc >/dev/null || missing "no gcc/make"
BUSYBOX=/bin/busybox
[ -x $BUSYBOX ] && ! ldd $BUSYBOX >/dev/null 2>&1 ||
    missing "no static busybox (apt-get install busybox-static)"

W=$OUT/$KVER
mkdir -p "$W"

# 1. gpio-sim and irq_sim from the matching source, built against the headers.
kmods() {
    local K=$W/kmod S=$W/src
    [ -f "$K/gpio-sim.ko" ] && [ -f "$K/irq_sim.ko" ] && return
    local series=${KVER%%-*}          # 6.1.0
    series=${series%.*}               # 6.1
    if [ ! -f "$S/gpio-sim.c" ]; then
        mkdir -p "$OUT/debs" "$S"
        if ! ls "$OUT"/debs/linux-source-"$series"_*.deb >/dev/null 2>&1; then
            log "downloading linux-source-$series"
            (cd "$OUT/debs" && apt-get download -q "linux-source-$series" >&2) ||
                missing "apt-get download linux-source-$series failed (no network, or no such package)"
        fi
        log "extracting gpio-sim.c, gpiolib.h and irq_sim.c"
        dpkg-deb --fsys-tarfile "$OUT"/debs/linux-source-"$series"_*.deb |
            tar -xO "./usr/src/linux-source-$series.tar.xz" |
            tar -xJ -C "$S" --strip-components=3 --wildcards \
                "linux-source-$series/drivers/gpio/gpio-sim.c" \
                "linux-source-$series/drivers/gpio/gpiolib.h" \
                "linux-source-$series/kernel/irq/irq_sim.c"
        # --strip-components=3 leaves drivers/gpio/* and kernel/irq/* flat.
    fi
    rm -rf "$K" && mkdir -p "$K"
    cp "$S"/gpio-sim.c "$S"/gpiolib.h "$S"/irq_sim.c "$K"/
    # irq_sim is always built in where it is configured at all: as a module it
    # needs a licence, and irq_to_desc() is not exported to modules, so call
    # the exported generic_handle_irq() on the number instead (same effect).
    sed -i 's/handle_simple_irq(irq_to_desc(irqnum));/generic_handle_irq(irqnum);/' "$K/irq_sim.c"
    grep -q 'generic_handle_irq(irqnum);' "$K/irq_sim.c" ||
        { echo "irq_sim.c changed upstream: the irq_to_desc patch no longer applies" >&2; exit 1; }
    printf '\nMODULE_LICENSE("GPL");\n' >> "$K/irq_sim.c"
    echo 'obj-m += irq_sim.o gpio-sim.o' > "$K/Kbuild"
    log "building gpio-sim.ko and irq_sim.ko against /lib/modules/$KVER/build"
    make -s -C "/lib/modules/$KVER/build" M="$K" -j"$(nproc)" modules >&2
}

# 2. The kernel as an ELF vmlinux: the xz payload of the bzImage, unpacked.
vmlinux() {
    local v=$W/vmlinux k=/boot/vmlinuz-$KVER off
    [ -s "$v" ] && [ "$v" -nt "$k" ] && return
    off=$(grep -abo $'\xfd7zXZ' "$k" | head -1 | cut -d: -f1)
    [ -n "$off" ] || { echo "$k has no xz payload" >&2; exit 1; }
    tail -c +$((off + 1)) "$k" | xz -dc --single-stream > "$v.tmp" 2>/dev/null || true
    [ -s "$v.tmp" ] || { echo "could not unpack $k" >&2; exit 1; }
    mv "$v.tmp" "$v"
}

# 3. The initramfs: busybox, the modules with their dependencies, /init.
initramfs() {
    local R=$W/root m p
    rm -rf "$R"
    mkdir -p "$R"/{bin,dev,proc,sys,tmp,host,usr,lib/modules/$KVER/extra}
    cp $BUSYBOX "$R/bin/busybox"
    for m in configfs virtio_pci 9pnet_virtio 9p i2c-stub i2c-dev; do
        for p in $(modprobe -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'); do
            install -D -m644 "$p" "$R$p"
        done
    done
    for p in "$W"/kmod/*.ko; do
        strip --strip-debug -o "$R/lib/modules/$KVER/extra/$(basename "$p")" "$p"
    done
    cp /lib/modules/"$KVER"/modules.{order,builtin,builtin.modinfo} "$R/lib/modules/$KVER/"
    depmod -b "$R" "$KVER"
    cat > "$R/init" <<'INIT'
#!/bin/busybox sh
# PID 1 of the test VM: mount what a test needs, run the host's guest.sh
# from the 9p share, hand its exit status back through isa-debug-exit.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
modprobe configfs && mount -t configfs configfs /sys/kernel/config
modprobe virtio_pci; modprobe 9pnet_virtio; modprobe 9p
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 host0 /host
# The host's /usr, read-only: the test binary's shared libraries.
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro hostusr /usr &&
    ln -s /usr/lib64 /lib64 && ln -s /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
echo "GUEST: up at $(cut -d' ' -f1 /proc/uptime) s, kernel $(uname -r)"
rc=1
if [ -f /host/guest.sh ]; then sh /host/guest.sh; rc=$?; fi
echo "$rc" > /host/exit-code
echo "GUEST-EXIT=$rc"
sync
# isa-debug-exit at 0xf4: QEMU exits with (rc << 1) | 1.
printf "\\$(printf %o "$rc")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
poweroff -f
INIT
    chmod 755 "$R/init"
    (cd "$R" && find . -print0 | cpio --null -o -H newc --quiet) > "$W/initramfs.cpio.tmp"
    mv "$W/initramfs.cpio.tmp" "$W/initramfs.cpio"
}

kmods
vmlinux
initramfs
echo "KVER=$KVER"
echo "KERNEL=$W/vmlinux"
echo "INITRD=$W/initramfs.cpio"
