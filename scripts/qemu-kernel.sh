#!/bin/sh
# Debian's cloud amd64 kernel, for booting test guests under QEMU (the
# second vhost-user frontend ebb is tested with, beside UML).
#
#   qemu-kernel.sh          fetch it if not yet here (root; Debian mirror)
#   qemu-kernel.sh -k       print the kernel image's path
#   qemu-kernel.sh -m       print the module tree's path
#
# The package is downloaded and unpacked into $EBB_QEMU_KERNEL_DIR
# (default /var/cache/ebb/qemu-kernel), not installed: installing a
# kernel package would run this host's boot loader and initramfs hooks.
# Only the image and the module tree are kept (about 100 MiB).
set -eu

dir=${EBB_QEMU_KERNEL_DIR:-/var/cache/ebb/qemu-kernel}

case ${1:-} in
-k) echo "$dir/vmlinuz"; exit 0 ;;
-m) echo "$dir/modules"; exit 0 ;;
"") ;;
*) echo "usage: $0 [-k|-m]" >&2; exit 2 ;;
esac

[ -f "$dir/vmlinuz" ] && [ -d "$dir/modules" ] && exit 0

# The versioned package the metapackage points at.
pkg() {
	apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' |
		head -n 1
}
p=$(pkg)
if [ -z "$p" ]; then
	apt-get update -qq
	p=$(pkg)
fi
[ -n "$p" ] || { echo "qemu-kernel: no linux-image-cloud-amd64 in apt" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ebb-qemu-kernel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# apt-get download drops to user _apt when it can write the directory;
# this private one is root's, so apt warns ("unsandboxed") and goes on as
# root.  Its errors must show, so stderr stays.
(cd "$tmp" && apt-get download -qq "$p")
dpkg-deb -x "$tmp"/"$p"_*.deb "$tmp/x"
rm -rf "$dir.new"
mkdir -p "$dir.new"
cp "$tmp"/x/boot/vmlinuz-* "$dir.new/vmlinuz"
cp -r "$tmp"/x/lib/modules/*/. "$dir.new/modules"
rm -rf "$dir"
mv "$dir.new" "$dir"
echo "qemu-kernel: $p in $dir"
