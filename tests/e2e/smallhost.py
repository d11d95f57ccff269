"""
smallhost: a small host inside this one, for tests and benchmarks whose
point is real memory pressure: a memory cgroup (v1, what this machine
has; v2 where mounted) with a limit, and a swap file, so that what does
not fit is really swapped by the kernel.

    with SmallHost(mem="640M", swap="1G") as h:
        with Ebbd(budget="512M", cgroup=h) as d:   # ebbd and its guests inside
            ...
        print(h.stats())       # usage, swap, majfaults, oom kills, swap I/O

Used by tests/e2e/test_policy.py and bench/policy_*.py; issue 11's web
farm benchmark reuses it.  Needs root, a memory cgroup controller we may
write to, and a filesystem under /var/tmp that takes a swap file (ext4,
xfs; not overlayfs or tmpfs).  SmallHost raises TestSkip naming what is
missing, and cleans up everything it made (swapoff, the file, the cgroup
and any child cgroup left in it) even when the test fails.

Swap I/O is host-wide (/proc/vmstat pswpin/pswpout): v1 has no per-cgroup
swap counters; swap_file_used (this swap file's Used in /proc/swaps) and
the cgroup's total_swap are ours alone.
"""
import os
import re
import subprocess
import time

from ebbtest import TestSkip, TestFailure, parse_size

V1_ROOT = "/sys/fs/cgroup/memory"


def _own_cgroup_v1():
    """ebb's tests' own memory cgroup directory (v1), or None."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, ctls, path = line.rstrip("\n").split(":", 2)
                if "memory" in ctls.split(","):
                    return os.path.join(V1_ROOT, path.lstrip("/"))
    except OSError:
        pass
    return None


def vmstat(keys=("pswpin", "pswpout", "pgmajfault")):
    out = {}
    with open("/proc/vmstat") as f:
        for line in f:
            k, v = line.split()
            if k in keys:
                out[k] = int(v)
    return out


class SmallHost:
    def __init__(self, mem="640M", swap="1G", memsw=None, name=None):
        if os.geteuid() != 0:
            raise TestSkip("small host needs root (cgroup and swapon)")
        parent = _own_cgroup_v1()
        if not parent or not os.path.isdir(parent):
            raise TestSkip("no cgroup v1 memory controller at %s" % V1_ROOT)
        if not os.access(os.path.join(parent, "cgroup.procs"), os.W_OK):
            raise TestSkip("cannot write the memory cgroup %s" % parent)
        self.mem = parse_size(mem)
        self.swap_size = parse_size(swap)
        self.dir = os.path.join(parent, name or "ebb-smallhost-%d" % os.getpid())
        self.swapfile = None
        self.swap_on = False
        try:
            os.mkdir(self.dir)
            self._write("memory.limit_in_bytes", str(self.mem))
            if memsw:
                self._write("memory.memsw.limit_in_bytes", str(parse_size(memsw)))
            self._swapon()
        except TestSkip:
            self.close()
            raise
        except Exception:
            self.close()
            raise
        self.start_vmstat = vmstat()

    # -- setup ---------------------------------------------------------
    def _write(self, f, v):
        with open(os.path.join(self.dir, f), "w") as fh:
            fh.write(v)

    def _read(self, f):
        with open(os.path.join(self.dir, f)) as fh:
            return fh.read()

    def _swapon(self):
        self.swapfile = "/var/tmp/ebb-smallhost-%d.swap" % os.getpid()
        r = subprocess.run(["fallocate", "-l", str(self.swap_size), self.swapfile],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise TestSkip("cannot make a swap file: %s" % r.stderr.strip())
        os.chmod(self.swapfile, 0o600)
        for argv in (["mkswap", self.swapfile], ["swapon", self.swapfile]):
            r = subprocess.run(argv, capture_output=True, text=True)
            if r.returncode != 0:
                raise TestSkip("%s failed: %s" % (argv[0], r.stderr.strip()))
        self.swap_on = True

    def procs_file(self):
        """The file a process writes its pid to, to join the small host."""
        return os.path.join(self.dir, "cgroup.procs")

    def preexec(self):
        """A Popen preexec_fn: the child joins the small host."""
        procs = self.procs_file()

        def join():
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        return join

    # -- numbers -------------------------------------------------------
    def stat(self):
        out = {}
        for line in self._read("memory.stat").splitlines():
            k, v = line.split()
            out[k] = int(v)
        return out

    def usage(self):
        return int(self._read("memory.usage_in_bytes"))

    def oom_kills(self):
        m = re.search(r"^oom_kill (\d+)", self._read("memory.oom_control"), re.M)
        return int(m.group(1)) if m else 0

    def swap_used(self):
        """Bytes in our swap file now (/proc/swaps)."""
        with open("/proc/swaps") as f:
            for line in f.read().splitlines()[1:]:
                p = line.split()
                if p[0] == self.swapfile:
                    return int(p[3]) * 1024
        return 0

    def stats(self):
        """usage, swap, total_pgmajfault, oom_kill, and host swap I/O
        (pswpin/pswpout in bytes) since the small host was made."""
        st = self.stat()
        now = vmstat()
        return {
            "usage": self.usage(),
            "swap": st.get("total_swap", st.get("swap", 0)),
            "swap_file_used": self.swap_used(),
            "pgmajfault": st.get("total_pgmajfault", 0),
            "oom_kill": self.oom_kills(),
            "swap_in": (now["pswpin"] - self.start_vmstat["pswpin"]) * 4096,
            "swap_out": (now["pswpout"] - self.start_vmstat["pswpout"]) * 4096,
        }

    # -- teardown ------------------------------------------------------
    def _rmdir_tree(self, path, deadline):
        for e in os.listdir(path):
            sub = os.path.join(path, e)
            if os.path.isdir(sub):
                self._rmdir_tree(sub, deadline)
        while True:
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.time() > deadline:
                    raise TestFailure("cannot remove cgroup %s (processes left?)" % path)
                time.sleep(0.1)

    def close(self):
        if self.swap_on:
            subprocess.run(["swapoff", self.swapfile], capture_output=True)
            self.swap_on = False
        if self.swapfile and os.path.exists(self.swapfile):
            os.unlink(self.swapfile)
        if os.path.isdir(self.dir):
            self._rmdir_tree(self.dir, time.time() + 20)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
