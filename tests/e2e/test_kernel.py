"""ebb's guest kernel (guest/kernel/): cached, keeps every vector register
of every guest process intact, and Debian's stock UML kernel still works
where the host allows it."""
import os
import re
import subprocess
import time

from ebbtest import (Ebbd, TestFailure, TestSkip, build_dir, guest_exec_ok,
                     kernel_path)

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "scripts", "guest-kernel.sh")

# Debian's UML 6.1 moves FP state with a fixed buffer of this many bytes;
# the host accepts a transfer only as long as its own XSAVE state.
DEBIAN_FP_BYTES = 2696


def vecstress(d, name, procs, seconds):
    """Run vecstress in a guest; return (registers, switches) after checking
    that nothing was corrupted."""
    out = guest_exec_ok(d, name, "vecstress --procs %d --seconds %d" % (procs, seconds))
    regs = re.search(r"vecstress: registers (.*) \(cpu xsave area (\d+) bytes\)", out)
    total = re.search(r"vecstress: (\d+) processes, (\d+) voluntary and (\d+) involuntary "
                      r"switches, (\d+) corrupted, (\d+) failed", out)
    if not regs or not total:
        raise TestFailure("no vecstress summary in:\n" + out[-2000:])
    if int(total.group(4)) or int(total.group(5)):
        raise TestFailure("vector registers corrupted:\n" + out[-2000:])
    rounds = [int(n) for n in re.findall(r"vecstress: process \d+: (\d+) rounds, 0 bad", out)]
    if len(rounds) != procs or min(rounds) == 0:
        raise TestFailure("not every process ran clean rounds:\n" + out[-2000:])
    return regs.group(1), int(total.group(2)) + int(total.group(3)), int(regs.group(2))


def test_guest_kernel_is_cached():
    """The build links guest/linux to the cached kernel; asking again finds
    it without rebuilding, and names the same file."""
    link = os.path.join(build_dir(), "guest", "linux")
    cached = os.path.realpath(link)
    assert os.access(cached, os.X_OK), "no kernel behind %s" % link
    assert cached == os.path.realpath(kernel_path()) or "EBB_KERNEL" in os.environ
    t0 = time.time()
    r = subprocess.run([SCRIPT], capture_output=True, text=True, timeout=60)
    took = time.time() - t0
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == cached, (r.stdout, cached)
    assert "building" not in r.stderr, r.stderr
    assert took < 10, "a cached kernel took %.1f s to find" % took
    info = open(os.path.join(os.path.dirname(cached), "info")).read()
    assert "patch: 0001-" in info, info


def test_vector_registers_survive_context_switches():
    """Four processes fill every vector register the CPU has (ZMM0-31 and
    k0-7 with AVX-512, else YMM or XMM) with their own patterns and check
    them across thousands of yields, sleeps and preemptions: none may come
    back wrong.  (A kernel whose FP transfers are shorter than the host's
    XSAVE state either panics at /init or fails exactly this.)"""
    with Ebbd(budget="1G") as d:
        d.run("vec", 128 << 20)
        regs, switches, xsave = vecstress(d, "vec", 4, 20)
        print("  %s, host xsave area %d bytes: %d context switches, 0 corrupted"
              % (regs, xsave, switches))
        assert switches >= 2000, "only %d context switches" % switches
        # A caught signal copies the FP state into the signal frame and
        # back: the task's state now lies past the fixed task_struct, and
        # hardened usercopy (on in ebb's config) checks that copy.
        out = guest_exec_ok(d, "vec", "trap 'echo caught-usr1' USR1; kill -USR1 $$; echo after-signal")
        assert "caught-usr1" in out and "after-signal" in out, out


def test_stock_debian_kernel_where_the_host_allows():
    """Debian's own UML kernel still boots ebb's guests, with its image
    (which carries its virtio modules), where the host's XSAVE state fits
    its fixed buffer; on larger hosts (AMX) it cannot, and the test says
    so."""
    stock = "/usr/bin/linux.uml"
    image = os.path.join(build_dir(), "guest", "initramfs-debian.cpio.gz")
    if not os.access(stock, os.X_OK) or not os.path.exists(image):
        raise TestSkip("Debian's user-mode-linux or its image is not installed")
    probe = subprocess.run([os.path.join(build_dir(), "guest", "vecstress"), "--seconds", "0",
                            "--procs", "1"], capture_output=True, text=True, timeout=30)
    m = re.search(r"cpu xsave area (\d+) bytes", probe.stdout)
    assert m, probe.stdout + probe.stderr
    if int(m.group(1)) > DEBIAN_FP_BYTES:
        raise TestSkip("this host's XSAVE state is %s bytes, more than the %d Debian's "
                       "UML 6.1 transfers: it panics at /init here" % (m.group(1), DEBIAN_FP_BYTES))
    with Ebbd(budget="1G", kernel=stock, initrd=image) as d:
        d.run("stock", 128 << 20)
        out = guest_exec_ok(d, "stock", "uname -r; ls /sys/bus/virtio/drivers")
        assert "virtio_balloon" in out, out
        regs, switches, _ = vecstress(d, "stock", 2, 5)
        print("  Debian's kernel: %s, %d switches, 0 corrupted" % (regs, switches))
