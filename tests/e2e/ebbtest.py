"""
ebbtest: the end-to-end test harness.  Starts a real ebbd on private
sockets and directories, boots real UML guests through it, and talks to
it over its control socket (the same JSON protocol ebbctl speaks).

Tests are functions named test_* in tests/e2e/test_*.py; run.py finds
and runs them.  A test fails by raising (assert or TestFailure).
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

MiB = 1 << 20


class TestFailure(Exception):
    pass


class TestSkip(Exception):
    pass


def build_dir():
    return os.environ.get("EBB_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "build"))


def ebbd_binary():
    return os.environ.get("EBB_EBBD", os.path.join(build_dir(), "src", "ebbd"))


def ebbctl_binary():
    return os.environ.get("EBB_EBBCTL", os.path.join(build_dir(), "src", "ebbctl"))


def initrd_path():
    return os.environ.get("EBB_INITRD", os.path.join(build_dir(), "guest", "initramfs.cpio.gz"))


def kernel_path():
    """ebb's guest kernel, the one ebbd boots by default (guest/kernel/)."""
    return os.environ.get("EBB_KERNEL", os.path.join(build_dir(), "guest", "linux"))


def reap(proc, timeout):
    """Wait for a process we asked to end; kill it after `timeout` s."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def remove_workdir(path):
    """Remove a test's scratch directory, or keep it (EBB_KEEP=1)."""
    if os.environ.get("EBB_KEEP"):
        print("  (kept %s)" % path)
    else:
        shutil.rmtree(path, ignore_errors=True)


class Client:
    """One control connection.  Events that arrive are kept in .events."""

    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.f = self.sock.makefile("rw", encoding="utf-8")
        self.greeting = json.loads(self.f.readline())
        self.events = []
        self.next_id = 1

    def close(self):
        self.f.close()
        self.sock.close()

    def _read(self):
        line = self.f.readline()
        if not line:
            raise TestFailure("ebbd closed the control connection")
        return json.loads(line)

    def call(self, cmd, **args):
        """Returns the 'return' object; raises CommandError on an error."""
        rid = self.next_id
        self.next_id += 1
        self.f.write(json.dumps({"execute": cmd, "arguments": args, "id": rid}) + "\n")
        self.f.flush()
        while True:
            msg = self._read()
            if "event" in msg:
                self.events.append(msg)
                continue
            if msg.get("id") != rid:
                raise TestFailure("reply id mismatch: %r" % msg)
            if "error" in msg:
                raise CommandError(msg["error"]["class"], msg["error"]["desc"])
            return msg["return"]

    def wait_event(self, name, pred=lambda d: True, timeout=20):
        """Wait for event @name (or any of a tuple of names) whose data
        satisfies @pred; returns the whole event."""
        names = (name,) if isinstance(name, str) else tuple(name)
        deadline = time.time() + timeout
        while True:
            for e in self.events:
                if e["event"] in names and pred(e.get("data", {})):
                    self.events.remove(e)
                    return e
            left = deadline - time.time()
            if left <= 0:
                raise TestFailure("no %s event within %ss" % (name, timeout))
            self.sock.settimeout(left)
            try:
                msg = self._read()
            except socket.timeout:
                continue
            finally:
                self.sock.settimeout(30)
            if "event" in msg:
                self.events.append(msg)


class CommandError(Exception):
    def __init__(self, cls, desc):
        super().__init__("%s: %s" % (cls, desc))
        self.cls = cls
        self.desc = desc


class Ebbd:
    """A private ebbd: `with Ebbd(budget="2G") as d: d.run("g1", "256M")`."""

    def __init__(self, budget=None, extra_args=(), kernel=None, initrd=None,
                 cgroup=None, workdir=None):
        """cgroup: a SmallHost (smallhost.py) that ebbd, and so its
        guests, run inside."""
        # On disk, like ebbd's default state dir (/var/lib/ebb): swap
        # backing files on a tmpfs /tmp would be host memory themselves.
        # workdir: start on an earlier Ebbd's directories (a restart); that
        # one's stop() removes them, this one's leaves them.
        self.owns_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="ebb-e2e-", dir="/var/tmp")
        self.sock = os.path.join(self.dir, "ebbd.sock")
        self.log = os.path.join(self.dir, "ebbd.log" if self.owns_dir else
                                "ebbd-%d.log" % time.monotonic_ns())
        if not self.owns_dir and os.path.exists(self.sock):
            # The dead ebbd's socket: wait for the new one, not for it.
            os.unlink(self.sock)
        args = [ebbd_binary(), "--socket", self.sock,
                "--run-dir", os.path.join(self.dir, "run"),
                "--log-dir", os.path.join(self.dir, "logs"),
                "--kernel", kernel or kernel_path(),
                "--initrd", initrd or initrd_path(),
                "--state-dir", os.path.join(self.dir, "state")]
        if budget:
            args += ["--budget", budget]
        args += list(extra_args)
        self.logf = open(self.log, "w")
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT,
                                     preexec_fn=cgroup.preexec() if cgroup else None)
        deadline = time.time() + 10
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.time() > deadline:
                log = open(self.log).read()
                self.stop()
                raise TestFailure("ebbd did not start:\n" + log)
            time.sleep(0.02)
        self.c = Client(self.sock)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            reap(self.proc, 20)
        self.logf.close()
        if self.owns_dir:
            remove_workdir(self.dir)
        return self.proc.returncode

    def daemon_log(self):
        return open(self.log).read()

    def client(self):
        return Client(self.sock)

    def ebbctl(self, *args, check=True):
        r = subprocess.run([ebbctl_binary(), "--socket", self.sock] + list(args),
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise TestFailure("ebbctl %s failed (%d): %s" % (" ".join(args), r.returncode, r.stderr))
        return r

    # -- guests ---------------------------------------------------------
    def run(self, name, mem, wait=True, **kw):
        r = self.c.call("guest-run", name=name, mem=mem, **kw)
        if wait:
            self.wait_ready(name)
        return r

    def guest(self, name):
        for g in self.c.call("guest-list")["guests"]:
            if g["name"] == name:
                return g
        raise TestFailure("no guest %s" % name)

    def tmem_guest(self, name):
        """The guest's entry in the `tmem` command's answer."""
        for g in self.c.call("tmem")["guests"]:
            if g["name"] == name:
                return g
        raise TestFailure("no tmem entry for %s" % name)

    def console_path(self, name):
        return os.path.join(self.dir, "logs", name + ".log")

    def console(self, name):
        try:
            with open(self.console_path(name), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_console(self, name, pattern, timeout=60, start=0):
        """Wait until `pattern` (regex) appears in the console after offset
        `start`; returns the match."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.console(name)[start:])
            if m:
                return m
            time.sleep(0.1)
        raise TestFailure("guest %s: no /%s/ on its console within %ss; tail:\n%s"
                          % (name, pattern, timeout, self.console(name)[-1500:]))

    def wait_ready(self, name, timeout=60):
        self.wait_console(name, r"ebb-guest: ready", timeout)
        self.wait_until(lambda: self.guest(name)["state"] == "running", timeout,
                        "guest %s running" % name)

    def exec(self, name, command):
        """Run a shell line in the guest, wait for its exit marker, return
        (status, output)."""
        start = len(self.console(name))
        self.c.call("guest-exec", name=name, command=command)
        m = self.wait_console(name, r"ebb-guest: exit (\d+) " + re.escape(command), 300, start)
        out = self.console(name)[start:]
        return int(m.group(1)), out

    def wait_until(self, pred, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return
            time.sleep(0.1)
        raise TestFailure("timed out (%ss) waiting for %s" % (timeout, what))


def resident_of_pid(pid):
    """Not used for accounting (ebbd measures the RAM file); a cross-check."""
    return None


# -- swap devices and guest counters (tests/e2e/test_swap.py, bench/swap_bench.py)

def qsd_binary():
    return os.environ.get("EBB_QSD", shutil.which("qemu-storage-daemon") or
                          "/usr/bin/qemu-storage-daemon")


class Qsd:
    """qemu-storage-daemon exporting a raw file as a vhost-user-blk socket:
    the reference backend ebb's own swap device is compared with.

        with Qsd("512M") as q:
            d.run("g1", "128M", cmdline=q.cmdline())

    The file (sparse, `size` long) lives in a fresh directory under `dir`,
    which must be a real disk filesystem (not tmpfs) for its page cache
    and writes to mean anything.  `discard` passes the guest's discards on
    as holes in the file.  Needs qemu-system-common (scripts/deps.sh)."""

    def __init__(self, size, dir=None, discard=False, timeout=10):
        binary = qsd_binary()
        if not os.path.exists(binary):
            raise TestSkip("no qemu-storage-daemon (install qemu-system-common)")
        self.dir = tempfile.mkdtemp(prefix="ebb-qsd-", dir=dir or "/var/tmp")
        self.path = os.path.join(self.dir, "disk.img")
        self.sock = os.path.join(self.dir, "vhost-user-blk.sock")
        self.log = os.path.join(self.dir, "qsd.log")
        with open(self.path, "wb") as f:
            f.truncate(parse_size(size))
        blockdev = ("driver=file,node-name=disk,filename=%s,cache.direct=off,"
                    "discard=%s" % (self.path, "unmap" if discard else "ignore"))
        export = ("type=vhost-user-blk,id=swap0,node-name=disk,num-queues=1,"
                  "addr.type=unix,addr.path=%s,writable=on" % self.sock)
        self.argv = [binary, "--blockdev", blockdev, "--export", export]
        self.logf = open(self.log, "w")
        self.proc = subprocess.Popen(self.argv, stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.time() > deadline:
                self.close()
                raise TestFailure("qemu-storage-daemon did not start: %s" % self.logtext())
            time.sleep(0.02)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def cmdline(self):
        """The guest kernel parameter that attaches this disk (as /dev/vda
        when it is the guest's only block device): virtio device id 2."""
        return "virtio_uml.device=%s:2" % self.sock

    def logtext(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""

    def allocated(self):
        """Bytes of the disk file that are allocated (st_blocks)."""
        return os.stat(self.path).st_blocks * 512

    def cached(self):
        """Bytes of the disk file in the host page cache (fincore)."""
        return page_cache_bytes(self.path)

    def io(self):
        """qsd's /proc/PID/io as a dict (write_bytes: what it sent toward
        the disk, dirtied page cache included; wchar: bytes written)."""
        return proc_io(self.proc.pid)

    def rss_anon(self):
        """qsd's own private memory.  Its RssShmem is the guest's RAM file,
        which ebbd already counts, so it is left out."""
        return proc_status_bytes(self.proc.pid, "RssAnon")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            reap(self.proc, 10)
        self.logf.close()
        remove_workdir(self.dir)


class QemuGuest:
    """A guest under QEMU, the second vhost-user frontend beside UML's:
    Debian's cloud amd64 kernel (scripts/qemu-kernel.sh) on TCG, the
    busybox image built for that kernel (mkinitramfs.sh -k qemu, same
    /init and agent as the UML guests), RAM a shared memfd (vhost-user
    needs it mappable by the backend), and one vhost-user-blk-pci disk per
    socket in `disks`, /dev/vda first.  The console is the serial line,
    logged to a file; `exec` drives the agent like Ebbd.exec.  With
    `reboot`, a guest reboot resets the machine instead of ending QEMU.

        with QemuGuest("128M", [sock]) as q:
            status, out = q.exec("cat /proc/swaps")

    Needs qemu-system-x86 and the kernel (scripts/deps.sh)."""

    def __init__(self, mem, disks, timeout=120, reboot=False):
        here = os.path.dirname(os.path.abspath(__file__))
        scripts = os.path.join(here, "..", "..", "scripts")
        kernel = subprocess.run([os.path.join(scripts, "qemu-kernel.sh"), "-k"],
                                capture_output=True, text=True,
                                check=True).stdout.strip()
        if not os.path.exists(kernel):
            raise TestFailure("no QEMU guest kernel at %s (run scripts/deps.sh)" % kernel)
        self.dir = tempfile.mkdtemp(prefix="ebb-qemu-", dir="/var/tmp")
        tools = [os.path.join(build_dir(), "guest", t) for t in ("pagecheck", "memhog")]
        subprocess.run([os.path.join(scripts, "mkinitramfs.sh"), "-k", "qemu", self.dir]
                       + tools, check=True, capture_output=True)
        mem = parse_size(mem) // MiB
        self.log = os.path.join(self.dir, "console.log")
        argv = ["qemu-system-x86_64", "-machine", "q35,accel=tcg", "-smp", "1",
                "-m", "%dM" % mem, "-object",
                "memory-backend-memfd,id=ram,size=%dM,share=on" % mem,
                "-machine", "memory-backend=ram",
                "-kernel", kernel, "-initrd", os.path.join(self.dir, "initramfs.cpio.gz"),
                "-append", "console=ttyS0 quiet panic=-1",
                "-nographic", "-nodefaults", "-serial", "stdio"]
        if not reboot:
            argv.append("-no-reboot")
        for i, sock in enumerate(disks):
            argv += ["-chardev", "socket,id=vu%d,path=%s" % (i, sock),
                     "-device", "vhost-user-blk-pci,chardev=vu%d,num-queues=1" % i]
        self.logf = open(self.log, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        self.wait(r"ebb-guest: ready", timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def console(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def wait(self, pattern, timeout, start=0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.console()[start:])
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise TestFailure("QEMU guest: no /%s/ within %ss (qemu %s); tail:\n%s"
                          % (pattern, timeout, self.proc.poll(), self.console()[-2000:]))

    def start(self, command):
        """Send a command line to the agent; do not wait for it."""
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def exec(self, command, timeout=300):
        start = len(self.console())
        self.start(command)
        m = self.wait(r"ebb-guest: exit (\d+) " + re.escape(command), timeout, start)
        return int(m.group(1)), self.console()[start:]

    def kill(self):
        """The VMM dies at once (SIGKILL), in the middle of whatever I/O."""
        self.proc.kill()
        self.proc.wait()

    def close(self):
        """End of input: the agent powers the guest off."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            reap(self.proc, 20)
        self.logf.close()
        remove_workdir(self.dir)


def tmem_device(t, role):
    """The device of `role` ("swap", "disk") in a guest's tmem entry."""
    for dv in t["devices"]:
        if dv["role"] == role:
            return dv
    raise TestFailure("no %s device in %s" % (role, t))


def parse_size(s):
    """'512M' -> bytes (binary suffixes K M G T, as ebbd takes them)."""
    if isinstance(s, int):
        return s
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(i?B)?\s*", str(s), re.I)
    if not m:
        raise ValueError("bad size %r" % s)
    return int(m.group(1)) << (10 * " KMGT".index(m.group(2).upper() or " "))


def page_cache_bytes(path):
    """Bytes of `path` resident in the host page cache, from util-linux's
    fincore; None when fincore is missing."""
    try:
        r = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw",
                            "--output", "RES", path],
                           capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return None
    if r.returncode != 0 or not r.stdout.strip():
        return None
    return int(r.stdout.split()[0])


def proc_io(pid):
    try:
        with open("/proc/%d/io" % pid) as f:
            return {k: int(v) for k, v in (l.split(":") for l in f)}
    except OSError:
        return {}


def proc_status_bytes(pid, field):
    """A 'kB' field of /proc/PID/status in bytes (0 if the process is gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_takes(d, arg):
    """Whether this ebbd's guest-run declares argument `arg`
    (query-commands)."""
    for c in d.c.call("query-commands")["commands"]:
        if c["name"] == "guest-run":
            return arg in c.get("args", [])
    return False


def guest_exec_ok(d, name, command):
    """d.exec that must succeed; returns the output."""
    status, out = d.exec(name, command)
    if status != 0:
        raise TestFailure("guest %s: '%s' exited %d:\n%s" % (name, command, status, out[-1500:]))
    return out


def guest_vmstat(d, name, keys=("pswpin", "pswpout")):
    """Counters from the guest's /proc/vmstat (through its console)."""
    out = guest_exec_ok(d, name, "grep -E '^(%s) ' /proc/vmstat" % "|".join(keys))
    vals = dict(re.findall(r"^(\w+) (\d+)$", out, re.M))
    return {k: int(vals[k]) for k in keys if k in vals}


def guest_swaps(d, name):
    """The devices in the guest's /proc/swaps."""
    out = guest_exec_ok(d, name, "cat /proc/swaps")
    return [l.split()[0] for l in out.splitlines() if l.startswith("/dev/")]


def guest_swapon(d, name, dev="/dev/vda", timeout=20):
    """Wait for the guest's block device, then mkswap and swapon it."""
    deadline = time.time() + timeout
    while True:
        status, _ = d.exec(name, "test -b %s" % dev)
        if status == 0:
            break
        if time.time() > deadline:
            raise TestFailure("guest %s: no %s within %ss" % (name, dev, timeout))
        time.sleep(0.2)
    guest_exec_ok(d, name, "mkswap %s" % dev)
    guest_exec_ok(d, name, "swapon %s" % dev)


PAGECHECK_RESULT = re.compile(r"pagecheck: (\d+) pages, (\d+) mismatches")
PAGECHECK_TIMES = re.compile(r"pagecheck: write ([\d.]+) s, verify ([\d.]+) s")


def pagecheck(d, name, size, seed, passes=1, fill=None, timeout=600):
    """Run pagecheck in the guest; returns a dict with pages, mismatches,
    write_s, verify_s, wall_s (guest-exec to exit marker) and status."""
    cmd = "pagecheck write %s %d --passes %d" % (size, seed, passes)
    if fill:
        cmd += " --fill %s" % fill
    start = len(d.console(name))
    t0 = time.monotonic()
    d.c.call("guest-exec", name=name, command=cmd)
    m = d.wait_console(name, r"ebb-guest: exit (\d+) " + re.escape(cmd), timeout, start)
    wall = time.monotonic() - t0
    out = d.console(name)[start:]
    res = PAGECHECK_RESULT.search(out)
    times = PAGECHECK_TIMES.search(out)
    if not res:
        raise TestFailure("guest %s: pagecheck gave no result (status %s):\n%s"
                          % (name, m.group(1), out[-1500:]))
    return {"status": int(m.group(1)), "pages": int(res.group(1)),
            "mismatches": int(res.group(2)),
            "write_s": float(times.group(1)) if times else None,
            "verify_s": float(times.group(2)) if times else None,
            "wall_s": wall, "output": out}
