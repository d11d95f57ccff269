#!/bin/sh
# Build ebb's guest kernel, or find it in the cache.
#
#   guest-kernel.sh [-o LINK]   build if missing; print the kernel's path,
#                               and point LINK (a symlink) at it
#   guest-kernel.sh -k          print the path the kernel has for the
#                               current inputs, built or not
#
# The kernel is User-Mode Linux from Debian's linux-source-6.1, with ebb's
# patches (guest/kernel/series, applied in order) and configuration
# (`make ARCH=um defconfig`, then guest/kernel/config on top).  It is cached
# in $EBB_CACHE/kernel/KEY/linux (EBB_CACHE defaults to /var/cache/ebb),
# where KEY hashes the source package's version, the series, every patch in
# it, the config fragment and this script's commands (comments aside): any
# change to what the kernel is made of builds a new one,
# and a second run, a second clone or CI on the same machine reuses it.
# Concurrent runs wait for each other (flock) instead of building twice.
#
# Needs the Debian packages linux-source-6.1, build-essential, flex, bison,
# bc, patch, xz-utils and util-linux (flock); scripts/deps.sh installs them.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
kdir="$here/../guest/kernel"
cache=${EBB_CACHE:-/var/cache/ebb}/kernel
tarball=/usr/src/linux-source-6.1.tar.xz
srcpkg=linux-source-6.1

die() {
	echo "guest-kernel: $*" >&2
	exit 1
}

link=
print_only=0
while getopts ko: opt; do
	case $opt in
	k) print_only=1 ;;
	o) link=$OPTARG ;;
	*) die "usage: $0 [-k] [-o LINK]" ;;
	esac
done

version=$(dpkg-query -W -f='${Version}' "$srcpkg" 2>/dev/null) ||
	die "$srcpkg is not installed (run scripts/deps.sh)"
[ -f "$tarball" ] || die "no $tarball (reinstall $srcpkg)"
patches=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$kdir/series")

# The key: what the kernel is built from, each part named so that two
# different inputs cannot hash alike by moving bytes between parts.
key=$( {
	echo "source $srcpkg $version"
	for p in $patches; do
		[ -f "$kdir/patches/$p" ] || die "series names a missing patch: $p"
		echo "patch $p $(sha256sum <"$kdir/patches/$p")"
	done
	echo "config $(sha256sum <"$kdir/config")"
	echo "script $(grep -v '^[[:space:]]*#' "$0" | sha256sum)"
} | sha256sum | cut -c1-16)
out="$cache/$key"
kernel="$out/linux"

if [ "$print_only" -eq 1 ]; then
	echo "$kernel"
	exit 0
fi

publish() {
	if [ -n "$link" ] && [ "$(readlink "$link" 2>/dev/null)" != "$kernel" ]; then
		ln -sfn "$kernel" "$link.tmp"
		mv -T "$link.tmp" "$link"
	fi
	echo "$kernel"
}

[ -x "$kernel" ] && { publish; exit 0; }

mkdir -p "$cache"
exec 9>"$cache/.lock"
if ! flock -n 9; then
	echo "guest-kernel: another build is running; waiting for it" >&2
	flock 9
fi
# It may have been built while we waited.
[ -x "$kernel" ] && { publish; exit 0; }

start=$(date +%s)
jobs=$(nproc)
work="$cache/build-$key"
rm -rf "$work"
mkdir -p "$work"
log="$work/build.log"
echo "guest-kernel: building $srcpkg $version with $(echo "$patches" | wc -w)" \
	"patches into $out ($jobs jobs; log $log)" >&2
# Unpacked under the cache, on disk: about 1.3 GB of source and objects,
# removed whatever happens; a failed build leaves only its log.
src="$work/$srcpkg"
trap 'rm -rf "$src"' EXIT
tar -C "$work" -xJf "$tarball"
for p in $patches; do
	echo "guest-kernel: applying $p" >&2
	patch -d "$src" -p1 --quiet --forward <"$kdir/patches/$p" >>"$log" 2>&1 ||
		die "patch $p does not apply to $srcpkg $version (see $log)"
done

make -C "$src" ARCH=um defconfig >>"$log" 2>&1 || die "defconfig failed (see $log)"
(cd "$src" && ARCH=um scripts/kconfig/merge_config.sh -m .config "$kdir/config") \
	>>"$log" 2>&1 || die "merging guest/kernel/config failed (see $log)"
make -C "$src" ARCH=um olddefconfig >>"$log" 2>&1 || die "olddefconfig failed (see $log)"

# Every option the fragment names must have taken: a dependency that
# Kconfig quietly refused would otherwise ship a kernel without it.
sed -n -e 's/^\(CONFIG_[A-Za-z0-9_]*=.*\)/\1/p' \
	-e 's/^# \(CONFIG_[A-Za-z0-9_]*\) is not set/\1=n/p' "$kdir/config" |
while IFS= read -r want; do
	name=${want%%=*}
	case $want in
	*=n) ! grep -q "^$name=" "$src/.config" ||
		die "$name is still set in the final .config" ;;
	*) grep -qx "$want" "$src/.config" ||
		die "$want did not take (final: $(grep "^$name=\|^# $name " "$src/.config" || echo absent))" ;;
	esac
done

# Progress: one line per 500 objects (about 1100 in all) on stderr, the
# whole output in the log.
(make -C "$src" ARCH=um -j"$jobs" 2>&1; echo $? >"$work/rc") |
	tee -a "$log" |
	awk -v t0="$start" '/^  (CC|AS|LD|AR) / { n++; if (n % 500 == 0) {
		"date +%s" | getline now; close("date +%s")
		printf "guest-kernel: %d objects built (%d s)\n", n, now - t0
		fflush() } }' >&2
[ "$(cat "$work/rc")" = 0 ] || { tail -30 "$log" >&2; die "build failed (see $log)"; }

mkdir -p "$out"
cp "$src/linux" "$out/linux.tmp"
cp "$src/.config" "$out/config"
cp "$log" "$out/build.log"
{
	echo "source: $srcpkg $version"
	for p in $patches; do echo "patch: $p"; done
	echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(($(date +%s) - start)) s"
} >"$out/info"
mv "$out/linux.tmp" "$kernel"
rm -rf "$work"
echo "guest-kernel: built in $(($(date +%s) - start)) s" >&2
publish
