#!/usr/bin/env python3
"""Boot the guest image in User-Mode Linux and check it end to end.

    boot-test.py INITRAMFS [--mem 256M] [--linux /usr/bin/linux.uml]
                 [--aslr] [--measure N]

Boot 1: wait for "ebb-guest: ready" (timing it), note the allocated size of
the guest's RAM file, run `memhog 100M` and `pagecheck` through the console
agent, check that the RAM file grew by at least 90 MiB, then send
`poweroff -f`.  The kernel command line carries ebb.run=, which must run
once before the agent reads its first line.
Boot 2: close the console input right after ready; the guest must power
off by itself.

Prints the measurements ("boot-test: ...") and exits 0 if all went well.
With --measure N it only boots N times and reports boot time and RAM file
footprint after ready (the numbers in docs/guest.md).
Every UML process is started in its own session and the whole session is
killed on the way out, so a failed run leaves no guest behind.
"""
import argparse
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20


def uml_cmdline(linux, initramfs, mem, uml_dir, extra=(), aslr=False):
    # Without host ASLR: UML's physical memory map spans from its image to
    # the randomized heap start, so with ASLR every boot gets a different
    # MemTotal and a 0-18 MiB larger memmap (struct pages) in the RAM file.
    prefix = [] if aslr else ["setarch", "-R"]
    return prefix + [
        linux,
        "mem=" + mem,
        "initrd=" + initramfs,
        # Console 0 is the agent's line: guest input from our pipe on
        # fd 0, guest output to fd 1.  All other consoles and serial lines
        # are off, so nothing else writes to fd 1 or waits for a terminal.
        "con=null", "con0=fd:0,fd:1", "ssl=null",
        # Report free 2 MiB blocks (order 9) to the balloon device.
        "page_reporting.page_reporting_order=9",
        # 256 legacy BSD ptys cost about a second of boot in UML.
        "pty.legacy_count=0",
        # mconsole socket and pid file go in our own directory, not ~/.uml.
        "uml_dir=" + uml_dir, "umid=boot-test",
        "quiet",
    ] + list(extra)


class Guest:
    """One UML guest with its console on a pipe pair."""

    def __init__(self, cmd):
        self.t0 = time.monotonic()
        r, self.wfd = os.pipe()
        self.proc = subprocess.Popen(cmd, stdin=r, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)
        os.close(r)
        self.out = b""

    def wait_for(self, marker, timeout=30.0):
        """Read the console until @marker appears; return seconds since
        start.  Raises on timeout or if the guest exits first."""
        want = marker.encode()
        deadline = time.monotonic() + timeout
        while want not in self.out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("timed out waiting for %r" % marker)
            if select.select([self.proc.stdout], [], [], min(left, 0.2))[0]:
                data = os.read(self.proc.stdout.fileno(), 65536)
                if not data:
                    raise RuntimeError("guest exited before %r" % marker)
                self.out += data
        return time.monotonic() - self.t0

    def send(self, line):
        os.write(self.wfd, line.encode() + b"\n")

    def close_input(self):
        if self.wfd >= 0:
            os.close(self.wfd)
            self.wfd = -1

    def ram_file_bytes(self):
        """Allocated (not apparent) size of the RAM file: UML keeps it
        open as a deleted file in /dev/shm (or $TMPDIR)."""
        fd_dir = "/proc/%d/fd" % self.proc.pid
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.endswith("(deleted)") and "/#" in target:
                return os.stat(os.path.join(fd_dir, fd)).st_blocks * 512
        raise RuntimeError("no RAM file among the UML process's fds")

    def wait_exit(self, timeout=15.0):
        self.proc.wait(timeout=timeout)
        return self.proc.returncode

    def kill(self):
        """Kill UML and any helper left over (they share its session and
        process group); harmless after a clean exit."""
        self.close_input()
        self.proc.stdout.close()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def check(cond, what):
    if not cond:
        raise RuntimeError("check failed: " + what)


def boot_agent(args, uml_dir):
    g = Guest(uml_cmdline(args.linux, args.initramfs, args.mem, uml_dir,
                          ["ebb.run=echo%20run%3A%20ok"], args.aslr))
    try:
        ready_s = g.wait_for("ebb-guest: ready")
        # Let the last boot-time writes (init, module loads) settle.
        time.sleep(0.5)
        boot_bytes = g.ram_file_bytes()
        print("boot-test: ready after %.2f s" % ready_s)
        print("boot-test: RAM file after ready: %.1f MiB allocated"
              % (boot_bytes / MIB))

        g.wait_for("ebb-guest: exit 0 echo run: ok")

        # UML takes a host fault round trip per 4 KiB page: on a busy
        # two-CPU host 100 MiB can take 10 s or more.
        t = time.monotonic()
        g.send("memhog 100M")
        g.wait_for("memhog: touched 100M", timeout=120)
        g.wait_for("memhog: done")
        g.wait_for("ebb-guest: exit 0 memhog 100M")
        grown = g.ram_file_bytes() - boot_bytes
        print("boot-test: memhog 100M took %.2f s, RAM file grew %.1f MiB"
              % (time.monotonic() - t, grown / MIB))
        # Not all 100 MiB: the guest reuses pages it already dirtied while
        # booting (the unpacked initramfs, freed init memory).
        check(grown >= 90 * MIB, "RAM file grew by at least 90 MiB")

        g.send("pagecheck write 32M 7 --passes 2")
        g.wait_for("pagecheck: 8192 pages, 0 mismatches", timeout=120)
        g.wait_for("ebb-guest: exit 0 pagecheck")

        g.send("false")
        g.wait_for("ebb-guest: exit 1 false")

        g.send("poweroff -f")
        rc = g.wait_exit()
        print("boot-test: poweroff -f: UML exited %d after %.2f s"
              % (rc, time.monotonic() - g.t0))
        check(rc == 0, "UML exit status 0 after poweroff")
    except BaseException:
        sys.stdout.write(g.out.decode(errors="replace"))
        raise
    finally:
        g.kill()


def boot_eof(args, uml_dir):
    g = Guest(uml_cmdline(args.linux, args.initramfs, args.mem, uml_dir,
                          [], args.aslr))
    try:
        g.wait_for("ebb-guest: ready")
        g.close_input()
        t = time.monotonic()
        rc = g.wait_exit()
        print("boot-test: end of input: UML exited %d after %.2f s"
              % (rc, time.monotonic() - t))
        check(rc == 0, "UML exit status 0 after end of input")
    except BaseException:
        sys.stdout.write(g.out.decode(errors="replace"))
        raise
    finally:
        g.kill()


def measure(args, uml_dir, boots):
    """Boot @boots times to the ready marker; print each boot's time to
    ready and RAM file footprint, then the medians."""
    times, sizes = [], []
    for _ in range(boots):
        g = Guest(uml_cmdline(args.linux, args.initramfs, args.mem, uml_dir,
                              [], args.aslr))
        try:
            times.append(g.wait_for("ebb-guest: ready"))
            time.sleep(0.5)
            sizes.append(g.ram_file_bytes() / MIB)
            g.send("poweroff -f")
            g.wait_exit()
        finally:
            g.kill()
        print("boot-test: ready after %.2f s, RAM file %.1f MiB"
              % (times[-1], sizes[-1]))
    times.sort()
    sizes.sort()
    print("boot-test: median of %d: ready after %.2f s, RAM file %.1f MiB"
          % (boots, times[boots // 2], sizes[boots // 2]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("initramfs")
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--linux", default="/usr/bin/linux.uml")
    ap.add_argument("--aslr", action="store_true",
                    help="keep host address randomization for UML")
    ap.add_argument("--measure", type=int, metavar="N",
                    help="only boot N times and report boot time/footprint")
    args = ap.parse_args()
    args.initramfs = os.path.abspath(args.initramfs)

    if not os.access(args.linux, os.X_OK):
        print("boot-test: no %s (install user-mode-linux)" % args.linux)
        return 77  # meson: skipped
    uml_dir = tempfile.mkdtemp(prefix="ebb-boot-test-")
    try:
        if args.measure:
            measure(args, uml_dir, args.measure)
            return 0
        boot_agent(args, uml_dir)
        boot_eof(args, uml_dir)
    finally:
        shutil.rmtree(uml_dir, ignore_errors=True)
    print("boot-test: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
