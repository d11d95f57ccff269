#!/bin/sh
# Install every Debian package ebb needs to build (ebb's guest kernel
# included: linux-source-6.1 and the kernel's build tools; libsystemd,
# inih, libmicrohttpd and scdoc for running as a service), boot guests,
# test (prometheus and tmux for the operations tests) and benchmark, and fetch Debian's cloud kernel for the QEMU test
# guests (scripts/qemu-kernel.sh).  Idempotent: does nothing (and needs no
# network) when all are present, so both `make demo` and `make test` call
# it first.  python3-matplotlib draws the policy benchmark's plot.
set -eu

PKGS="build-essential meson ninja-build pkg-config clang libclang-rt-14-dev \
libcmocka-dev libjansson-dev liblz4-dev libzstd-dev libxxhash-dev \
user-mode-linux busybox-static cpio gzip python3 procps util-linux \
qemu-system-common qemu-system-x86 \
linux-source-6.1 flex bison bc patch xz-utils python3-matplotlib \
libsystemd-dev libinih-dev libmicrohttpd-dev scdoc prometheus tmux systemd"

here=$(cd "$(dirname "$0")" && pwd)
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
kernel=$("$here/qemu-kernel.sh" -k)
[ -z "$missing" ] && [ -f "$kernel" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing packages:$missing, or the QEMU guest kernel" \
		"$kernel (run as root to install)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if [ -n "$missing" ]; then
	echo "deps: installing$missing"
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
"$here/qemu-kernel.sh"
