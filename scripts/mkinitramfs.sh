#!/bin/sh
# Build the guest initramfs: OUTDIR/NAME (default initramfs.cpio.gz).
#
#   mkinitramfs.sh [-k KIND] [-n NAME] [-i INIT] [-b BUSYBOX] [-m MODDIR] OUTDIR [TOOL...]
#
#   KIND     whose kernel the image is for: ebb (default), ebb's own UML
#            guest kernel (scripts/guest-kernel.sh), which has every driver
#            built in, so the image holds no modules; uml, the UML kernel of
#            Debian's user-mode-linux; or qemu, Debian's cloud amd64 kernel
#            under QEMU (scripts/qemu-kernel.sh fetches it)
#   INIT     the guest's /init script (default: guest/init beside this script)
#   BUSYBOX  a statically linked busybox (default: busybox on PATH, as
#            installed by Debian's busybox-static)
#   MODDIR   the kernel's module tree (uml default: the only directory in
#            /usr/lib/uml/modules, from Debian's user-mode-linux; qemu
#            default: the modules beside scripts/qemu-kernel.sh's kernel)
#   TOOL     static guest programs to put in /bin (meson passes the built
#            memhog and pagecheck)
#
# The image holds busybox with one symlink per applet, the kernel's virtio
# drivers where they are modules (flat, in /lib/modules, with
# /lib/modules/load naming the ones /init loads, in order), the tools and
# /init.  Debian's UML image also holds the modules of a denser zswap.
# The archive is built without root: the kernel's built-in initramfs
# already provides /dev/console, and devtmpfs supplies the rest.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
init="$here/../guest/init"
busybox=$(command -v busybox || echo /bin/busybox)
kind=ebb
name=initramfs.cpio.gz
moddir=

usage="usage: $0 [-k ebb|uml|qemu] [-n NAME] [-i INIT] [-b BUSYBOX] [-m MODDIR] OUTDIR [TOOL...]"

die() {
	echo "mkinitramfs: $*" >&2
	exit 1
}

while getopts k:n:i:b:m: opt; do
	case $opt in
	k) kind=$OPTARG ;;
	n) name=$OPTARG ;;
	i) init=$OPTARG ;;
	b) busybox=$OPTARG ;;
	m) moddir=$OPTARG ;;
	*) die "$usage" ;;
	esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || die "$usage"
outdir=$1
shift

case $kind in
ebb)
	# Everything is built in (guest/kernel/config): no modules at all.
	modules=
	load=
	;;
uml)
	# /init loads the two virtio drivers.  zswap, lzo and zbud are built
	# into Debian's linux.uml; the other three are for a denser zswap,
	# loaded on demand (insmod zsmalloc.ko, lz4_compress.ko then lz4.ko)
	# before choosing them in /sys/module/zswap/parameters
	# (bench/swap_bench.py).
	modules="kernel/drivers/virtio/virtio_balloon.ko
		kernel/drivers/block/virtio_blk.ko
		kernel/mm/zsmalloc.ko
		kernel/lib/lz4/lz4_compress.ko
		kernel/crypto/lz4.ko"
	load="virtio_balloon virtio_blk"
	if [ -z "$moddir" ]; then
		for d in /usr/lib/uml/modules/*/; do
			[ -z "$moddir" ] ||
				die "several UML module trees, pick one with -m"
			moddir=${d%/}
		done
	fi
	[ -d "$moddir" ] || die "no UML modules (install user-mode-linux)"
	;;
qemu)
	# Debian builds virtio PCI and virtio-blk as modules: all loaded,
	# dependencies first.  (QEMU has no vhost-user balloon to load a
	# driver for.)
	modules="kernel/drivers/virtio/virtio_ring.ko
		kernel/drivers/virtio/virtio.ko
		kernel/drivers/virtio/virtio_pci_legacy_dev.ko
		kernel/drivers/virtio/virtio_pci_modern_dev.ko
		kernel/drivers/virtio/virtio_pci.ko
		kernel/drivers/block/virtio_blk.ko"
	load=$(for m in $modules; do basename "$m" .ko; done)
	[ -n "$moddir" ] || moddir=$("$here/qemu-kernel.sh" -m)
	[ -d "$moddir" ] || die "no QEMU guest modules (run scripts/deps.sh)"
	;;
*)
	die "$usage"
	;;
esac
[ -f "$init" ] || die "no init script at $init"
[ -x "$busybox" ] || die "no busybox (install busybox-static)"

# The guest has no dynamic loader: every program must be static.  ldd
# fails on a static binary, which is what we want.
for prog in "$busybox" "$@"; do
	[ -f "$prog" ] || die "no such program: $prog"
	! ldd "$prog" >/dev/null 2>&1 || die "$prog is dynamically linked"
done

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)	# absolute: cpio runs inside the stage
out="$outdir/$name"

stage=$(mktemp -d "${TMPDIR:-/tmp}/ebb-initramfs.XXXXXX")
trap 'rm -rf "$stage" "$stage.list" "$out.cpio" "$out.tmp"' EXIT

mkdir -p "$stage/bin" "$stage/sbin" "$stage/usr/bin" "$stage/usr/sbin" \
	"$stage/dev" "$stage/proc" "$stage/sys" "$stage/tmp" "$stage/root" \
	"$stage/lib/modules"
cp "$busybox" "$stage/bin/busybox"
# Links point at /bin/busybox as the guest sees it.  (`busybox --install`
# would link to this host's path of the binary instead.)
for applet in $("$busybox" --list-full); do
	[ -e "$stage/$applet" ] || ln -s /bin/busybox "$stage/$applet"
done

# Debian ships the modules with debug info, which the guest never reads:
# stripping it keeps the image small (strip is in binutils; without it the
# modules go in as they are).
for m in $modules; do
	cp "$moddir/$m" "$stage/lib/modules/"
	if command -v strip >/dev/null 2>&1; then
		strip --strip-debug "$stage/lib/modules/${m##*/}"
	fi
done
for m in $load; do
	echo "$m"
done >"$stage/lib/modules/load"
for prog in "$@"; do
	cp "$prog" "$stage/bin/"
done
cp "$init" "$stage/init"
chmod 0755 "$stage/init"
chmod 1777 "$stage/tmp"

# Same inputs, same bytes: fixed mtimes and owners, sorted names, and gzip
# without a name or time stamp.
find "$stage" -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +
# Through files, not pipes: sh has no pipefail, and a failing cpio must
# fail the build.  The rename makes the result appear whole or not at all.
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort >"$stage.list")
(cd "$stage" && cpio --quiet -o -H newc -R 0:0 --reproducible \
	<"$stage.list" >"$out.cpio")
gzip -9n <"$out.cpio" >"$out.tmp"
mv "$out.tmp" "$out"
