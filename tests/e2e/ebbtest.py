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

    def __init__(self, budget=None, extra_args=()):
        self.dir = tempfile.mkdtemp(prefix="ebb-e2e-")
        self.sock = os.path.join(self.dir, "ebbd.sock")
        self.log = os.path.join(self.dir, "ebbd.log")
        args = [ebbd_binary(), "--socket", self.sock,
                "--run-dir", os.path.join(self.dir, "run"),
                "--log-dir", os.path.join(self.dir, "logs"),
                "--initrd", initrd_path()]
        if budget:
            args += ["--budget", budget]
        args += list(extra_args)
        self.logf = open(self.log, "w")
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.time() > deadline:
                raise TestFailure("ebbd did not start:\n" + open(self.log).read())
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
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        rc = self.proc.returncode
        if os.environ.get("EBB_KEEP"):
            print("  (kept %s)" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return rc

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
