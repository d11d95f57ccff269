"""End to end: a hostile vhost-user frontend fails only its own device.

A real UML guest ("victim") runs under ebbd next to an external guest
("evil") whose balloon socket this test drives as a Python vhost-user
frontend.  Whatever evil sends, ebbd must fail evil's device (guest-list
shows device_failed, a DEVICE_FAILED event names it), stay up, and keep
serving the victim: its balloon reaches a new target and it can still
allocate memory.
"""
import mmap
import os
import select
import socket
import struct
import time

from ebbtest import Ebbd, MiB, TestFailure

# vhost-user requests (QEMU docs/interop/vhost-user.rst)
GET_FEATURES, SET_FEATURES, SET_OWNER, SET_MEM_TABLE = 1, 2, 3, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE = 8, 9, 10
SET_VRING_KICK, SET_VRING_CALL = 12, 13
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES = 15, 16
SET_VRING_ENABLE, SET_BACKEND_REQ_FD, GET_CONFIG = 18, 21, 24
VERSION, NEED_REPLY = 0x1, 0x8
PF_WANTED = (1 << 3) | (1 << 5) | (1 << 9)    # REPLY_ACK, BACKEND_REQ, CONFIG

# virtio-balloon
F_VERSION_1 = 1 << 32
F_BALLOON = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 5)   # TELL_HOST, STATS, OOM, REPORTING
Q_INFLATE = 0
NQ, NUM = 4, 64

# Evil's guest memory, laid out like the unit tests': a 16 MiB memfd at
# guest-physical 1 MiB, one 64 KiB block of rings per queue at the start.
GPA, RAM = 1 * MiB, 16 * MiB
PFN_BUF = GPA + 512 * 1024


def ring(q):
    """(desc, avail, used) guest addresses of queue q."""
    base = GPA + q * 0x10000
    return base, base + 0x1000, base + 0x2000


class Frontend:
    """A minimal vhost-user frontend on a balloon socket."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(path)
        self.keep = []                  # fds whose other ends ebbd holds

    def close(self):
        self.sock.close()
        for fd in self.keep:
            os.close(fd)
        self.keep = []

    def send(self, req, payload=b"", flags=VERSION, fds=()):
        data = struct.pack("<III", req, flags, len(payload)) + payload
        if fds:
            socket.send_fds(self.sock, [data], list(fds))
        else:
            self.sock.sendall(data)

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionResetError("backend closed the connection")
            buf += chunk
        return buf

    def reply(self, req):
        r, flags, size = struct.unpack("<III", self._recv_exact(12))
        if r != req or flags != VERSION | 0x4:
            raise TestFailure("bad reply header %d/%#x to request %d" % (r, flags, req))
        return self._recv_exact(size)

    def get_u64(self, req):
        self.send(req)
        return struct.unpack("<Q", self.reply(req))[0]

    def call(self, req, payload=b"", fds=()):
        """Send with NEED_REPLY; return the ack (0 is success)."""
        self.send(req, payload, VERSION | NEED_REPLY, fds)
        return struct.unpack("<Q", self.reply(req))[0]

    def closed_by_peer(self, timeout=5):
        """True once ebbd has closed the connection (reads EOF)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            r, _, _ = select.select([self.sock], [], [], deadline - time.time())
            if not r:
                break
            try:
                if not self.sock.recv(4096):
                    return True
            except ConnectionResetError:
                return True
        return False

    def handshake(self, memfd):
        """The UML order, every step acknowledged; returns the kick fds."""
        self.send(SET_OWNER)
        feats = self.get_u64(GET_FEATURES)
        assert feats & (F_VERSION_1 | F_BALLOON) == F_VERSION_1 | F_BALLOON, hex(feats)
        pf = self.get_u64(GET_PROTOCOL_FEATURES) & PF_WANTED
        assert pf == PF_WANTED, hex(pf)
        assert self.call(SET_PROTOCOL_FEATURES, struct.pack("<Q", pf)) == 0
        a, b = socket.socketpair()
        assert self.call(SET_BACKEND_REQ_FD, fds=[b.fileno()]) == 0
        b.close()
        self.keep.append(a.detach())
        self.send(GET_CONFIG, struct.pack("<III", 0, 16, 0) + bytes(16))
        cfg = self.reply(GET_CONFIG)
        assert len(cfg) == 28, cfg
        assert self.call(SET_FEATURES, struct.pack("<Q", F_VERSION_1 | F_BALLOON)) == 0
        table = struct.pack("<II", 1, 0) + struct.pack("<QQQQ", GPA, RAM, GPA, 0)
        assert self.call(SET_MEM_TABLE, table, fds=[memfd]) == 0
        kicks = []
        for q in range(NQ):
            call, kick = os.eventfd(0), os.eventfd(0)
            self.keep += [call, kick]
            kicks.append(kick)
            desc, avail, used = ring(q)
            assert self.call(SET_VRING_CALL, struct.pack("<Q", q), fds=[call]) == 0
            assert self.call(SET_VRING_NUM, struct.pack("<II", q, NUM)) == 0
            assert self.call(SET_VRING_BASE, struct.pack("<II", q, 0)) == 0
            assert self.call(SET_VRING_ADDR, struct.pack("<IIQQQQ", q, 0, desc, used, avail, 0)) == 0
        for q in range(NQ):
            assert self.call(SET_VRING_KICK, struct.pack("<Q", q), fds=[kicks[q]]) == 0
            assert self.call(SET_VRING_ENABLE, struct.pack("<II", q, 1)) == 0
        return kicks


class GuestRam:
    """Evil's RAM: a memfd, mapped here to play the driver's part."""

    def __init__(self):
        self.fd = os.memfd_create("evil-ram")
        os.ftruncate(self.fd, RAM)
        self.m = mmap.mmap(self.fd, RAM)
        self.avail_idx = [0] * NQ

    def close(self):
        self.m.close()
        os.close(self.fd)

    def off(self, gpa):
        assert GPA <= gpa < GPA + RAM
        return gpa - GPA

    def post(self, q, addr, length, flags=0):
        """One-descriptor chain on queue q, made available (entry, then idx)."""
        desc, avail, _ = ring(q)
        head = self.avail_idx[q] % NUM
        struct.pack_into("<QIHH", self.m, self.off(desc) + 16 * head, addr, length, flags, 0)
        struct.pack_into("<H", self.m, self.off(avail) + 4 + 2 * head, head)
        self.avail_idx[q] += 1
        struct.pack_into("<H", self.m, self.off(avail) + 2, self.avail_idx[q] & 0xffff)

    def used_idx(self, q):
        _, _, used = ring(q)
        return struct.unpack_from("<H", self.m, self.off(used) + 2)[0]

    def inflate(self, kick, pfns):
        struct.pack_into("<%dI" % len(pfns), self.m, self.off(PFN_BUF), *pfns)
        self.post(Q_INFLATE, PFN_BUF, 4 * len(pfns))
        os.eventfd_write(kick, 1)


def start_evil(d):
    r = d.c.call("guest-run", name="evil", mem=64 * MiB, external=True)
    path = r["sockets"]["balloon"]
    assert os.path.exists(path), r
    return path


def wait_failed(d, fe):
    """evil's device failed, and only evil's."""
    assert fe.closed_by_peer(5), "ebbd kept the hostile connection open"
    ev = d.c.wait_event("DEVICE_FAILED", lambda e: e["name"] == "evil", 5)
    assert ev["data"]["device"] == "balloon", ev
    assert d.alive(), "ebbd died"
    assert d.guest("evil")["device_failed"] is True, d.guest("evil")
    assert d.guest("victim")["device_failed"] is False, d.guest("victim")
    return ev["data"]["reason"]


def victim_works(d, target):
    d.c.call("balloon", name="victim", target=target)
    d.wait_until(lambda: d.guest("victim")["balloon_actual"] == target, 10,
                 "victim's balloon to reach %d MiB" % (target >> 20))
    st, out = d.exec("victim", "memhog 50M")
    assert st == 0, out[-1000:]
    assert d.guest("victim")["device_failed"] is False


def test_garbage_fails_only_the_hostile_device():
    """Oversized header, then plain garbage: evil fails twice; a frontend
    stalled mid-message does not hold up the victim."""
    with Ebbd() as d:
        d.run("victim", 256 * MiB)
        path = start_evil(d)

        # A stalled frontend: half a header, then silence.
        fe = Frontend(path)
        fe.sock.sendall(struct.pack("<III", GET_FEATURES, VERSION, 0)[:6])
        victim_works(d, 192 * MiB)
        assert d.guest("evil")["device_failed"] is False
        # The rest of a header that announces a 1 MiB payload.
        fe.sock.sendall(struct.pack("<III", GET_FEATURES, VERSION, MiB)[6:])
        reason = wait_failed(d, fe)
        assert "too large" in reason, reason
        fe.close()

        # It listens again; garbage fails it again.
        fe = Frontend(path)
        fe.sock.sendall(b"GET / HTTP/1.1\r\nHost: ebb\r\n\r\n")
        reason = wait_failed(d, fe)
        assert "version" in reason, reason
        fe.close()
        assert "evil/balloon" in d.daemon_log()

        victim_works(d, 128 * MiB)


def test_pfn_outside_memory_fails_only_the_hostile_device():
    """After a failure evil reconnects and does a proper handshake (memfd
    memory table, rings in it): a good inflate is served, then a pfn
    outside guest memory fails the device again."""
    with Ebbd() as d:
        d.run("victim", 256 * MiB)
        path = start_evil(d)
        fe = Frontend(path)
        fe.send(GET_FEATURES, flags=0)          # version 0
        wait_failed(d, fe)
        fe.close()

        ram = GuestRam()
        fe = Frontend(path)
        try:
            # The device was reset: the whole handshake is served again.
            kicks = fe.handshake(ram.fd)

            # A good inflate: four pages inside evil's memory come back.
            # Every page this touches is allocated first, so the RAM
            # file's size drops by exactly the four pfns' pages.
            pfns = [(GPA + 4 * MiB) // 4096 + i for i in range(4)]
            for gpa in [pfn * 4096 for pfn in pfns] + list(ring(Q_INFLATE)) + [PFN_BUF]:
                ram.m[ram.off(gpa)] = 1 if gpa >= GPA + 4 * MiB else 0
            blocks = os.fstat(ram.fd).st_blocks
            ram.inflate(kicks[Q_INFLATE], pfns)
            d.wait_until(lambda: ram.used_idx(Q_INFLATE) == 1, 5, "the good inflate to be used")
            after = os.fstat(ram.fd).st_blocks
            assert blocks - after == 4 * 4096 // 512, "pages not punched: %d -> %d blocks" % (blocks, after)
            d.wait_until(lambda: d.guest("evil")["inflated"] == 4 * 4096, 5,
                         "evil's inflated count")

            # The hostile one: a pfn far beyond the 16 MiB of memory.
            victim_works(d, 192 * MiB)
            ram.inflate(kicks[Q_INFLATE], [(GPA + 4 * MiB) // 4096, (GPA + RAM) // 4096 + 100])
            reason = wait_failed(d, fe)
            assert "pfn outside guest memory" in reason, reason
            assert ram.used_idx(Q_INFLATE) == 1, "the hostile buffer was used"
        finally:
            fe.close()
            ram.close()
        assert "evil/balloon" in d.daemon_log()

        victim_works(d, 128 * MiB)
