"""End to end: ebb as a host service (issue 14).  A config file starts
ebbd; a real Prometheus (Debian's package) scrapes it while guests run."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

from ebbtest import Ebbd, MiB, TestFailure, TestSkip, ebbd_binary, ebbctl_binary, \
    kernel_path, initrd_path, reap, remove_workdir


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def parse_samples(page):
    """{(name, frozenset(labels)): value} of a text-format page."""
    out = {}
    for line in page.splitlines():
        if not line or line.startswith("#"):
            continue
        head, value = line.rsplit(" ", 1)
        labels = frozenset()
        if "{" in head:
            name, rest = head.split("{", 1)
            pairs = [p.split("=", 1) for p in rest.rstrip("}").split(",") if p]
            labels = frozenset((k, v.strip('"')) for k, v in pairs)
        else:
            name = head
        out[(name, labels)] = float(value)
    return out


def test_config_file_starts_ebbd():
    """ebbd started with only --config: the file's budget, compressor and
    metrics port are in force, a flag overrides the file's budget, and a
    bad key stops the start naming file, line and key."""
    d0 = tempfile.mkdtemp(prefix="ebb-conf-", dir="/var/tmp")
    try:
        port = free_port()
        conf = os.path.join(d0, "ebbd.conf")
        with open(conf, "w") as f:
            f.write("# written by test_config_file_starts_ebbd\n"
                    "[daemon]\nsocket = %s/ctl.sock\nrun-dir = %s/run\n"
                    "log-dir = %s/logs\nstate-dir = %s/state\n"
                    "[guests]\nkernel = %s\ninitrd = %s\n"
                    "[memory]\nbudget = 768M\n"
                    "[tmem]\ncompressor = zstd\n"
                    "[metrics]\nport = %d\n"
                    % (d0, d0, d0, d0, kernel_path(), initrd_path(), port))
        r = subprocess.run([ebbd_binary(), "--config", conf, "--check-config"],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        assert "budget = 768M" in r.stdout and "compressor = zstd" in r.stdout, r.stdout
        sock = os.path.join(d0, "ctl.sock")
        log = open(os.path.join(d0, "ebbd.log"), "w")
        proc = subprocess.Popen([ebbd_binary(), "--config", conf, "--budget", "640M"],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 10
            while not os.path.exists(sock):
                assert proc.poll() is None and time.time() < deadline, \
                    open(os.path.join(d0, "ebbd.log")).read()
                time.sleep(0.05)
            ctl = lambda *a: json.loads(subprocess.run(
                [ebbctl_binary(), "--socket", sock, "--json"] + list(a),
                capture_output=True, text=True, check=True, timeout=30).stdout)
            assert ctl("info")["budget"] == 640 * MiB     # the flag won
            subprocess.run([ebbctl_binary(), "--socket", sock, "run", "g1",
                            "--mem", "128M", "--swap", "64M"], check=True,
                           capture_output=True, timeout=30)
            deadline = time.time() + 60
            while True:
                g = ctl("list")["guests"][0]
                if g["state"] == "running" and g["resident"] > 0:
                    break
                assert time.time() < deadline, g
                time.sleep(0.2)
            assert ctl("tmem")["store"]["compressor"] == "zstd"
            status, _, page = http_get("http://127.0.0.1:%d/metrics" % port)
            s = parse_samples(page)
            assert status == 200
            assert s[("ebb_budget_bytes", frozenset())] == 640 * MiB
            assert ("ebb_guest_resident_bytes", frozenset({("guest", "g1")})) in s
        finally:
            proc.terminate()
            reap(proc, 20)
            log.close()
        # A bad value, then an unknown key: no start, file:line:key.
        for body, want in (("[memory]\nbudget = lots\n",
                            "bad.conf:2: key 'budget' in [memory]: not a size: 'lots'"),
                           ("[daemon]\nsocket = /x\n[memory]\nbudgit = 1G\n",
                            "bad.conf:4: unknown key 'budgit' in [memory]")):
            bad = os.path.join(d0, "bad.conf")
            with open(bad, "w") as f:
                f.write(body)
            r = subprocess.run([ebbd_binary(), "--config", bad], capture_output=True,
                               text=True, timeout=10)
            assert r.returncode == 1 and want in r.stderr, (r.returncode, r.stderr)
        r = subprocess.run([ebbd_binary(), "--config", os.path.join(d0, "none.conf")],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 1 and "No such file" in r.stderr, r.stderr
    finally:
        remove_workdir(d0)


class Prometheus:
    """Debian's prometheus scraping one target every `interval` s."""

    def __init__(self, target_port, interval=1):
        if not shutil.which("prometheus"):
            raise TestSkip("no prometheus (scripts/deps.sh installs it)")
        self.dir = tempfile.mkdtemp(prefix="ebb-prom-", dir="/var/tmp")
        self.port = free_port()
        self.interval = interval
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: %ds\n  scrape_timeout: %ds\n"
                    "scrape_configs:\n  - job_name: ebbd\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n"
                    % (interval, interval, target_port))
        self.logf = open(os.path.join(self.dir, "prometheus.log"), "w")
        self.proc = subprocess.Popen(
            ["prometheus", "--config.file", cfg,
             "--storage.tsdb.path", os.path.join(self.dir, "data"),
             "--web.listen-address", "127.0.0.1:%d" % self.port],
            stdout=self.logf, stderr=subprocess.STDOUT)

    def query(self, q):
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (
            self.port, urllib.parse.urlencode({"query": q}))
        _, _, body = http_get(url)
        r = json.loads(body)
        assert r["status"] == "success", r
        return r["data"]["result"]

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if http_get("http://127.0.0.1:%d/-/ready" % self.port)[0] == 200:
                    return
            except OSError:
                pass
            assert self.proc.poll() is None, self.log()
            time.sleep(0.2)
        raise TestFailure("prometheus not ready:\n" + self.log())

    def log(self):
        return open(os.path.join(self.dir, "prometheus.log")).read()[-3000:]

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            reap(self.proc, 20)
        self.logf.close()
        remove_workdir(self.dir)


def test_prometheus_scrapes_ebbd():
    """A real Prometheus scrapes ebbd (1 s interval) while two guests run:
    its per-guest resident series matches `ebbctl list --json` within a
    scrape interval, a balloon change shows in the next scrapes, the
    target is up, and `promtool check metrics` accepts a scrape."""
    port = free_port()
    with Ebbd(budget="1G", extra_args=["--metrics-port", str(port)]) as d:
        prom = Prometheus(port)
        try:
            prom.wait_ready()
            d.run("g1", 192 * MiB, swap=64 * MiB)
            d.run("g2", 128 * MiB)
            # Different sizes, so a series mixed up between guests shows.
            d.c.call("guest-exec", name="g1", command="memhog 96M --hold 60")
            d.wait_console("g1", r"memhog: touched 96M", 60)
            time.sleep(1.5)     # residency is measured every 0.5 s

            # promtool on one scrape.
            _, ctype, page = http_get("http://127.0.0.1:%d/metrics" % port)
            assert ctype.startswith("text/plain; version=0.0.4"), ctype
            r = subprocess.run(["promtool", "check", "metrics"], input=page,
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stdout + r.stderr
            for fam in ("ebb_budget_bytes", "ebb_resident_bytes", "ebb_claims_bytes",
                        "ebb_free_bytes", "ebb_store_bytes",
                        "ebb_guest_balloon_target_bytes", "ebb_guest_balloon_actual_bytes",
                        "ebb_guest_reported_bytes_total", "ebb_guest_returned_bytes_total",
                        "ebb_guest_tmem_puts_total", "ebb_guest_tmem_gets_total",
                        "ebb_guest_tmem_hits_total", "ebb_guest_tmem_misses_total",
                        "ebb_guest_tmem_refused_puts_total", "ebb_guest_tmem_pages",
                        "ebb_device_failures", "ebb_tmem_put_latency_seconds",
                        "ebb_tmem_get_latency_seconds", "ebb_events_total"):
                assert "# TYPE %s " % fam in page, fam

            # Prometheus' own view: wait for a scrape newer than now,
            # then compare with ebbctl read at the same moment.
            def prom_resident():
                res = prom.query("ebb_guest_resident_bytes")
                return {x["metric"]["guest"]: (float(x["value"][0]), float(x["value"][1]))
                        for x in res}
            deadline = time.time() + 30
            while True:
                t0 = time.time()
                listed = {g["name"]: g["resident"] for g in json.loads(
                    d.ebbctl("--json", "list").stdout)["guests"]}
                time.sleep(prom.interval * 1.5)
                ups = prom.query("up{job='ebbd'}")
                seen = prom_resident()
                if ups and ups[0]["value"][1] == "1" and set(seen) == {"g1", "g2"}:
                    break
                assert time.time() < deadline, (ups, seen, prom.log())
            listed_after = {g["name"]: g["resident"] for g in json.loads(
                d.ebbctl("--json", "list").stdout)["guests"]}
            for name in ("g1", "g2"):
                ts, value = seen[name]
                lo = min(listed[name], listed_after[name])
                hi = max(listed[name], listed_after[name])
                print("  %s: prometheus %d MiB (scraped %.1f s after ebbctl), "
                      "ebbctl %d..%d MiB" % (name, value / MiB, ts - t0, lo / MiB, hi / MiB))
                assert lo - 2 * MiB <= value <= hi + 2 * MiB, (name, value, lo, hi)
            assert seen["g1"][1] > seen["g2"][1] + 64 * MiB, seen

            # A balloon change: the target series follows within two
            # scrape intervals of the command's reply.
            d.c.call("balloon", name="g2", target=64 * MiB)
            t_cmd = time.time()
            deadline = time.time() + 10
            while True:
                res = prom.query("ebb_guest_balloon_target_bytes{guest='g2'}")
                if res and float(res[0]["value"][1]) == 64 * MiB:
                    break
                assert time.time() < deadline, res
                time.sleep(0.2)
            lag = time.time() - t_cmd
            print("  balloon target visible in prometheus %.1f s after the command" % lag)
            assert lag <= 3 * prom.interval + 1, lag
            # Counters are counters: the events Prometheus saw include
            # both launches.
            ev = prom.query("ebb_events_total{event='GUEST_STARTED'}")
            assert ev and float(ev[0]["value"][1]) >= 2, ev
            # ebbd itself stayed quick: the page's build time it reports.
            c = prom.query("ebb_metrics_collect_seconds")
            print("  collect time %.3f ms" % (float(c[0]["value"][1]) * 1e3))
            assert float(c[0]["value"][1]) < 0.05, c
        finally:
            prom.close()


def test_metrics_endpoint_refuses_junk():
    """Hostile HTTP: wrong method, unknown path, a huge header, a client
    that connects and says nothing; ebbd keeps serving and answering."""
    port = free_port()
    with Ebbd(budget="512M", extra_args=["--metrics-port", str(port)]) as d:
        req = urllib.request.Request("http://127.0.0.1:%d/metrics" % port,
                                     data=b"x" * 1000, method="POST")
        try:
            urllib.request.urlopen(req, timeout=5)
            raise TestFailure("POST accepted")
        except urllib.error.HTTPError as e:
            assert e.code == 405, e.code
        try:
            http_get("http://127.0.0.1:%d/nope" % port)
            raise TestFailure("unknown path served")
        except urllib.error.HTTPError as e:
            assert e.code == 404, e.code
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        big = socket.create_connection(("127.0.0.1", port))
        big.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 100000 + b"\r\n\r\n")
        reply = big.recv(100)
        assert reply.startswith(b"HTTP/1.1 4"), reply     # 413/431, not a crash
        t0 = time.time()
        status, _, page = http_get("http://127.0.0.1:%d/metrics" % port)
        assert status == 200 and "ebb_budget_bytes 536870912" in page
        assert time.time() - t0 < 1.0
        assert d.c.call("info")["budget"] == 512 * MiB   # the loop answers
        for s in silent + [big]:
            s.close()
        assert d.alive()


class NotifyStandIn:
    """A datagram socket that stands in for systemd's NOTIFY_SOCKET and
    keeps what ebbd sends, with arrival times."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.msgs = []

    def recv(self, timeout):
        self.sock.settimeout(timeout)
        try:
            m = self.sock.recv(4096).decode()
        except socket.timeout:
            return None
        self.msgs.append((time.time(), m))
        return m

    def wait(self, pred, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = self.recv(max(0.01, deadline - time.time()))
            if m is not None and pred(m):
                return m
        raise TestFailure("no %s from ebbd within %ss; got %r" % (what, timeout, self.msgs))

    def close(self):
        self.sock.close()


def pid1_name():
    try:
        return open("/proc/1/comm").read().strip()
    except OSError:
        return "unknown"


def test_notify_ready_status_watchdog_against_stand_in():
    """ebbd's sd_notify path against a socket standing in for systemd's:
    READY=1 arrives only once the control socket accepts (a connection
    made the moment it arrives gets the greeting), STATUS= follows a
    guest's launch, WATCHDOG=1 comes every WatchdogSec/2 from the loop,
    STOPPING=1 on SIGTERM."""
    d0 = tempfile.mkdtemp(prefix="ebb-notify-", dir="/var/tmp")
    n = NotifyStandIn(os.path.join(d0, "notify"))
    sock = os.path.join(d0, "ctl.sock")
    env = dict(os.environ, NOTIFY_SOCKET=n.path, WATCHDOG_USEC="1000000")
    env.pop("WATCHDOG_PID", None)
    log = open(os.path.join(d0, "ebbd.log"), "w")
    proc = subprocess.Popen([ebbd_binary(), "--socket", sock, "--run-dir", d0 + "/run",
                             "--log-dir", d0 + "/logs", "--state-dir", d0 + "/state",
                             "--kernel", kernel_path(), "--initrd", initrd_path(),
                             "--budget", "512M", "--fd-hold", "auto"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        ready = n.wait(lambda m: "READY=1" in m, 10, "READY=1")
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(5)
        c.connect(sock)             # accepted: READY came after listen()
        greeting = json.loads(c.makefile().readline())
        assert "ebb" in json.dumps(greeting), greeting
        c.close()
        assert "STATUS=0 guests, 0B resident of 512M budget" in ready, ready
        # Watchdog pings: about two a second (WatchdogSec 1 s).
        t0 = time.time()
        pings = 0
        while time.time() - t0 < 2.0:
            m = n.recv(0.2)
            if m and "WATCHDOG=1" in m:
                pings += 1
        assert 3 <= pings <= 6, (pings, n.msgs)
        subprocess.run([ebbctl_binary(), "--socket", sock, "run", "g1", "--mem", "96M"],
                       check=True, capture_output=True, timeout=30)
        st = n.wait(lambda m: "STATUS=1 guest," in m, 5, "STATUS with 1 guest")
        print("  ready: %r; then %r" % (ready, st))
        # The guest's device fds went to the "fd store" (--fd-hold auto
        # under NOTIFY_SOCKET; test_fd_store_against_stand_in checks the
        # fds themselves).
        assert any(m.startswith("FDSTORE=1\nFDNAME=guest/g1/balloon/conn")
                   for _, m in n.msgs), n.msgs
        proc.terminate()
        n.wait(lambda m: "STOPPING=1" in m, 5, "STOPPING=1")
        # Read on while ebbd stops, as systemd does: it removes its
        # guest's fds from the store (FDSTOREREMOVE=1), and a datagram
        # socket nobody reads blocks its sender once 10 are queued.
        deadline = time.time() + 30
        while proc.poll() is None and time.time() < deadline:
            n.recv(0.1)
        assert proc.wait(1) == 0
        assert any(m.startswith("FDSTOREREMOVE=1\nFDNAME=guest/g1/balloon/conn")
                   for _, m in n.msgs[-40:]), n.msgs[-40:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        n.close()
        remove_workdir(d0)


def test_fd_store_against_stand_in():
    """--fd-hold auto under NOTIFY_SOCKET: every device fd goes to the fd
    store as FDSTORE=1 with FDNAME= and exactly that fd (the connection's
    peer is the guest's socket); holding them as PID 1 would, the guest
    survives kill -9 of ebbd, and a new ebbd started with them as
    LISTEN_FDS/LISTEN_FDNAMES (as systemd restarts it) takes them back."""
    from test_restart import socket_inodes, unix_peers, wait_gone, process_alive
    d0 = tempfile.mkdtemp(prefix="ebb-fdstore-", dir="/var/tmp")
    store = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    store.bind(os.path.join(d0, "notify"))
    sock = os.path.join(d0, "ctl.sock")
    env = dict(os.environ, NOTIFY_SOCKET=os.path.join(d0, "notify"))
    args = [ebbd_binary(), "--socket", sock, "--run-dir", d0 + "/run",
            "--log-dir", d0 + "/logs", "--state-dir", d0 + "/state",
            "--kernel", kernel_path(), "--initrd", initrd_path(), "--budget", "512M",
            "--fd-hold", "auto"]
    held = {}                   # name -> our fd, as PID 1 keeps them
    pid = 0
    procs = []

    def drain(timeout):
        store.settimeout(timeout)
        try:
            while True:
                msg, fds, _, _ = socket.recv_fds(store, 4096, 8)
                m = msg.decode()
                kv = dict(l.split("=", 1) for l in m.split("\n") if "=" in l)
                if kv.get("FDSTORE") == "1":
                    assert len(fds) == 1, (m, fds)
                    assert re.fullmatch(r"guest/g1/[a-z]+/[a-z]+(/\d+)?|tmem/store|"
                                        r"pool/claims", kv["FDNAME"]), m
                    held[kv["FDNAME"]] = fds[0]
                else:
                    assert not fds, (m, fds)
                    if kv.get("FDSTOREREMOVE") == "1":
                        old = held.pop(kv["FDNAME"], None)
                        if old is not None:
                            os.close(old)
        except socket.timeout:
            pass

    log = open(os.path.join(d0, "ebbd.log"), "w")
    try:
        p1 = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(p1)
        deadline = time.time() + 10
        while not os.path.exists(sock) and time.time() < deadline:
            drain(0.05)
        r = subprocess.run([ebbctl_binary(), "--socket", sock, "run", "g1", "--mem", "96M"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        drain(1.0)
        assert "guest/g1/balloon/conn" in held, sorted(held)
        for line in open(os.path.join(d0, "ebbd.log")):
            m = re.search(r"started UML pid (\d+)", line)
            if m:
                pid = int(m.group(1))
        assert pid, open(os.path.join(d0, "ebbd.log")).read()
        # The stored connection fd is ebbd's end: its peer is the guest's.
        conn = held["guest/g1/balloon/conn"]
        inode = os.fstat(conn).st_ino
        peer = unix_peers(os.getpid()).get(inode)
        assert peer in socket_inodes(pid), (inode, peer, socket_inodes(pid))
        print("  %d fds stored: %s" % (len(held), ", ".join(sorted(held))))

        # kill -9: the store (this test) still holds them; the guest lives.
        p1.kill()
        p1.wait()
        drain(0.5)
        time.sleep(1)
        assert process_alive(pid)
        assert unix_peers(os.getpid()).get(inode) == peer

        # A restart as systemd does it: the stored fds at 3.., named.
        names = sorted(held)
        fds = [held[n] for n in names]

        def at_3():
            for i, fd in enumerate(fds):
                os.dup2(fd, 100 + i, inheritable=False)
            for i in range(len(fds)):
                os.dup2(100 + i, 3 + i, inheritable=True)

        env2 = dict(env, LISTEN_FDS=str(len(fds)), LISTEN_FDNAMES=":".join(names))
        os.unlink(sock)
        # LISTEN_PID is the pid that execs ebbd: a shell's $$, then exec.
        p2 = subprocess.Popen(["/bin/sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; '
                               'exec "$@"', "sh"] + args,
                              env=env2, stdout=log, stderr=subprocess.STDOUT,
                              preexec_fn=at_3, close_fds=False)
        procs.append(p2)
        deadline = time.time() + 10
        while not os.path.exists(sock) and time.time() < deadline:
            drain(0.05)
        text = open(os.path.join(d0, "ebbd.log")).read()
        # The page store and the claims record are the daemon's, the rest
        # the guest's; with them all it is adopted.
        ndev = len([n for n in names if n.startswith("guest/")])
        assert ndev == len(fds) - 2, names
        assert "fd holder: the systemd fd store; got back %d fd(s), kept %d" \
            % (len(fds), ndev) in text, text
        assert "%d device fd(s) recovered from the systemd fd store" % ndev in text, text
        assert "page store adopted" in text, text
        assert "adopted from an earlier ebbd (pid %d)" % pid in text, text
        print("  restarted with LISTEN_FDS=%d: took them back, adopted g1" % len(fds))
        p2.terminate()
        deadline = time.time() + 30
        while p2.poll() is None and time.time() < deadline:
            drain(0.1)
        assert p2.wait(1) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if pid and process_alive(pid):
            os.killpg(pid, signal.SIGKILL)
            wait_gone(pid)
        for fd in held.values():
            os.close(fd)
        store.close()
        log.close()
        remove_workdir(d0)


def test_systemd_transient_unit():
    """Under systemd as PID 1: ebbd as a transient Type=notify unit is
    'activating' until its control socket accepts, then 'active'."""
    if pid1_name() != "systemd":
        raise TestSkip("systemd is not PID 1 on this machine (PID 1 is '%s'), so "
                       "systemd-run cannot start units; the notify path is tested "
                       "against a stand-in socket instead "
                       "(test_notify_ready_status_watchdog_against_stand_in)" % pid1_name())
    d0 = tempfile.mkdtemp(prefix="ebb-unit-", dir="/var/tmp")
    unit = "ebb-e2e-%d" % os.getpid()
    sock = os.path.join(d0, "ctl.sock")
    try:
        subprocess.run(["systemd-run", "--unit", unit, "-p", "Type=notify",
                        "-p", "WatchdogSec=10", "--no-block", ebbd_binary(),
                        "--socket", sock, "--run-dir", d0 + "/run", "--log-dir", d0 + "/logs",
                        "--state-dir", d0 + "/state", "--kernel", kernel_path(),
                        "--initrd", initrd_path(), "--budget", "512M"], check=True)
        deadline = time.time() + 20
        while True:
            state = subprocess.run(["systemctl", "is-active", unit], capture_output=True,
                                   text=True).stdout.strip()
            if state == "active":
                break
            assert state in ("activating", "inactive"), state
            assert time.time() < deadline, state
            time.sleep(0.05)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(sock)
        c.close()
        status = subprocess.run(["systemctl", "show", "-p", "StatusText", unit],
                                capture_output=True, text=True).stdout
        assert "guests" in status, status
    finally:
        subprocess.run(["systemctl", "stop", unit], capture_output=True)
        remove_workdir(d0)


JOURNAL_SOCKET = "/run/systemd/journal/socket"


def test_journal_fields_against_stand_in():
    """With stderr being the stream named by JOURNAL_STREAM (what systemd
    sets up), ebbd logs through sd_journal_send: entries carry PRIORITY,
    SYSLOG_IDENTIFIER and EBB_GUEST for lines about a guest.  A socket
    stands in for journald's where none runs."""
    if os.path.exists(JOURNAL_SOCKET):
        raise TestSkip("a journald socket exists at %s; not replacing it" % JOURNAL_SOCKET)
    made_dir = not os.path.isdir(os.path.dirname(JOURNAL_SOCKET))
    os.makedirs(os.path.dirname(JOURNAL_SOCKET), exist_ok=True)
    j = NotifyStandIn(JOURNAL_SOCKET)
    d0 = tempfile.mkdtemp(prefix="ebb-journal-", dir="/var/tmp")
    logpath = os.path.join(d0, "stderr")
    log = open(logpath, "w")
    st = os.fstat(log.fileno())
    env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
    env.pop("EBB_LOG", None)
    sock = os.path.join(d0, "ctl.sock")
    proc = subprocess.Popen([ebbd_binary(), "--socket", sock, "--run-dir", d0 + "/run",
                             "--log-dir", d0 + "/logs", "--state-dir", d0 + "/state",
                             "--kernel", kernel_path(), "--initrd", initrd_path(),
                             "--budget", "512M"],
                            env=env, stdout=log, stderr=log)
    try:
        def fields(m):
            return dict(l.split("=", 1) for l in m.splitlines() if "=" in l)
        j.wait(lambda m: "ebbd ready" in m, 10, "the ready line in the journal")
        subprocess.run([ebbctl_binary(), "--socket", sock, "run", "g1", "--mem", "96M"],
                       check=True, capture_output=True, timeout=30)
        m = j.wait(lambda m: "EBB_GUEST=g1" in m, 20, "an entry about g1")
        f = fields(m)
        print("  entry: %r" % f)
        assert f["SYSLOG_IDENTIFIER"] == "ebbd" and f["PRIORITY"] == "6", f
        ready = fields([x for _, x in j.msgs if "ebbd ready" in x][0])
        assert "EBB_GUEST" not in ready and ready["PRIORITY"] == "6", ready
        proc.terminate()
        assert proc.wait(30) == 0
        log.close()
        # Nothing went to stderr: the journal took every line.
        assert "ebbd ready" not in open(logpath).read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        j.close()
        os.unlink(JOURNAL_SOCKET)
        if made_dir:
            os.rmdir(os.path.dirname(JOURNAL_SOCKET))
        remove_workdir(d0)


def test_destdir_install_boots_a_guest():
    """`make install DESTDIR=<tmp>` stages programs, guest kernel and
    image, unit, config and man pages; the staged ebbd, given no kernel
    or image path, finds them beside itself and boots a guest."""
    root = tempfile.mkdtemp(prefix="ebb-destdir-", dir="/var/tmp")
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    build = os.path.abspath(os.environ.get("EBB_BUILD", os.path.join(repo, "build")))
    try:
        r = subprocess.run(["meson", "install", "-C", build, "--no-rebuild",
                            "--destdir", root], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        prefix = subprocess.run(["meson", "introspect", build, "--buildoptions"],
                                capture_output=True, text=True, check=True).stdout
        prefix = [o["value"] for o in json.loads(prefix) if o["name"] == "prefix"][0]
        top = root + prefix
        ebbd = os.path.join(top, "sbin", "ebbd")
        for f in ("sbin/ebbd", "bin/ebbctl", "lib/ebb/linux", "lib/ebb/initramfs.cpio.gz",
                  "lib/systemd/system/ebbd.service", "share/man/man8/ebbd.8",
                  "share/man/man1/ebbctl.1", "share/man/man5/ebbd.conf.5"):
            assert os.path.exists(os.path.join(top, f)), f
        conf = [os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs
                if f == "ebbd.conf"]
        assert conf, "no ebbd.conf installed"
        unit = open(os.path.join(top, "lib/systemd/system/ebbd.service")).read()
        assert "Type=notify" in unit and "ExecStart=%s/sbin/ebbd" % prefix in unit, unit
        assert "WatchdogSec=" in unit and "RuntimeDirectory=ebb" in unit
        # systemd's own parser accepts the unit (offline: no PID 1 needed);
        # it only warns on a bad value, so any output fails the test.
        if shutil.which("systemd-analyze"):
            copy = os.path.join(root, "ebbd.service")
            with open(copy, "w") as f:
                f.write(unit.replace("ExecStart=%s/sbin/ebbd" % prefix,
                                     "ExecStart=%s/sbin/ebbd" % top))
            r = subprocess.run(["systemd-analyze", "verify", "--man=no", copy],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), \
                r.stdout + r.stderr
        # The installed default config is valid as shipped.
        r = subprocess.run([ebbd, "--config", conf[0], "--check-config"],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        assert "kernel = %s/sbin/../lib/ebb/linux" % top in r.stdout, r.stdout
        man = subprocess.run(["man", "-l", "-Tutf8", os.path.join(top, "share/man/man8/ebbd.8")],
                             capture_output=True, text=True, env=dict(os.environ, MANWIDTH="80"))
        if man.returncode == 0:
            text = re.sub(".\x08", "", man.stdout).replace("\u2010", "-")
            assert "--metrics-port" in text, text[:500]
        # Boot a guest from the staged tree.
        d0 = os.path.join(root, "var")
        os.makedirs(d0)
        sock = os.path.join(d0, "ctl.sock")
        log = open(os.path.join(root, "ebbd.log"), "w")
        proc = subprocess.Popen([ebbd, "--socket", sock, "--run-dir", d0 + "/run",
                                 "--log-dir", d0 + "/logs", "--state-dir", d0 + "/state",
                                 "--budget", "512M"], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 10
            while not os.path.exists(sock):
                assert proc.poll() is None and time.time() < deadline, \
                    open(os.path.join(root, "ebbd.log")).read()
                time.sleep(0.05)
            ctl = os.path.join(top, "bin", "ebbctl")
            subprocess.run([ctl, "--socket", sock, "run", "g1", "--mem", "96M"],
                           check=True, capture_output=True, timeout=30)
            deadline = time.time() + 60
            while "ebb-guest: ready" not in open(os.path.join(d0, "logs", "g1.log"),
                                                 errors="replace").read():
                assert time.time() < deadline, "guest did not boot"
                time.sleep(0.2)
            g = json.loads(subprocess.run([ctl, "--socket", sock, "--json", "list"],
                                          capture_output=True, text=True, check=True).stdout)
            pid = g["guests"][0]["pid"]
            exe = os.path.realpath("/proc/%d/exe" % pid)
            print("  guest pid %d runs %s" % (pid, exe))
            assert exe.startswith(root), exe
        finally:
            proc.terminate()
            reap(proc, 20)
            log.close()
    finally:
        remove_workdir(root)


def test_top_in_tmux():
    """`ebbctl top` in tmux: shows both guests sorted by resident, follows
    a balloon change, quits on q."""
    if not shutil.which("tmux"):
        raise TestSkip("no tmux (scripts/deps.sh installs it)")
    server = "ebb-e2e-%d" % os.getpid()
    tmux = ["tmux", "-L", server]
    with Ebbd(budget="1G") as d:
        d.run("big", 192 * MiB)
        d.run("small", 96 * MiB)
        d.c.call("guest-exec", name="big", command="memhog 64M --hold 60")
        d.wait_console("big", r"memhog: touched 64M", 60)
        time.sleep(1)
        try:
            subprocess.run(tmux + ["new-session", "-d", "-s", "top", "-x", "132", "-y", "30",
                                   "%s --socket %s top --interval 0.5" % (ebbctl_binary(), d.sock)],
                           check=True)

            def screen():
                return subprocess.run(tmux + ["capture-pane", "-p", "-t", "top"],
                                      capture_output=True, text=True).stdout

            def wait_screen(pred, timeout, what):
                deadline = time.time() + timeout
                while time.time() < deadline:
                    s = screen()
                    if pred(s):
                        return s
                    time.sleep(0.1)
                raise TestFailure("top never showed %s; screen:\n%s" % (what, screen()))

            def row(s, name):
                for line in s.splitlines():
                    if line.split()[:1] == [name]:
                        return line.split()
                return None

            s = wait_screen(lambda s: row(s, "big") and row(s, "small"), 10, "both guests")
            print(s.rstrip())
            lines = s.splitlines()
            assert "NAME" in s and "RESIDENT" in s and "TARGET" in s
            assert [i for i, l in enumerate(lines) if l.startswith("big")][0] < \
                [i for i, l in enumerate(lines) if l.startswith("small")][0], \
                "not sorted by resident"
            head = [l for l in lines if l.startswith("NAME")][0].split()
            tcol = head.index("TARGET")
            assert row(s, "small")[tcol] == "96M", row(s, "small")
            d.c.call("balloon", name="small", target=48 * MiB)
            s = wait_screen(lambda s: row(s, "small") and row(s, "small")[tcol] == "48M",
                            3, "small's target 48M")
            wait_screen(lambda s: "BALLOON_TARGET_REACHED name=small" in s, 10,
                        "the balloon event")
            subprocess.run(tmux + ["send-keys", "-t", "top", "q"], check=True)
            deadline = time.time() + 3
            while subprocess.run(tmux + ["has-session", "-t", "top"],
                                 capture_output=True).returncode == 0:
                assert time.time() < deadline, "top did not quit on q:\n" + screen()
                time.sleep(0.1)
        finally:
            subprocess.run(tmux + ["kill-server"], capture_output=True)


def test_metrics_show_a_failed_device():
    """A hostile vhost-user frontend fails an external guest's balloon:
    the next scrape has ebb_guest_device_failed{device="balloon"} 1 for
    that guest only, ebb_device_failures 1 and the DEVICE_FAILED event
    counted."""
    import struct
    port = free_port()
    with Ebbd(budget="512M", extra_args=["--metrics-port", str(port)]) as d:
        r = d.c.call("guest-run", name="evil", mem=64 * MiB, external=True)
        d.c.call("guest-run", name="calm", mem=64 * MiB, external=True)
        s = parse_samples(http_get("http://127.0.0.1:%d/metrics" % port)[2])
        assert s[("ebb_device_failures", frozenset())] == 0
        fe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        fe.connect(r["sockets"]["balloon"])
        # GET_FEATURES, version 1, announcing a 1 MiB payload: too large.
        fe.sendall(struct.pack("<III", 1, 1, MiB))
        d.c.wait_event("DEVICE_FAILED", lambda e: e["name"] == "evil", 5)
        fe.close()
        s = parse_samples(http_get("http://127.0.0.1:%d/metrics" % port)[2])
        key = lambda g: ("ebb_guest_device_failed",
                         frozenset({("guest", g), ("device", "balloon")}))
        assert s[key("evil")] == 1 and s[key("calm")] == 0, s
        assert s[("ebb_device_failures", frozenset())] == 1
        assert s[("ebb_events_total", frozenset({("event", "DEVICE_FAILED")}))] == 1
        assert d.alive()
