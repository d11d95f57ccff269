#!/usr/bin/env python3
"""reread: a guest re-reads a data disk after dropping its page cache.
Served from ebb's shared host cache (cachedisk: an ephemeral tmem pool)
versus from the image file (qemu-storage-daemon exporting the same file,
the reference vhost-user-blk server).

Per rep and backend, one guest (--mem) reads the whole disk (`md5sum
/dev/vda`) three times:

  cold     the host's page cache is dropped first: the image comes from disk;
  reread   the guest drops its page cache (and the host drops its own, so
           the file really is read from disk unless ebb holds the pages);
  reread, host page cache warm
           the guest drops its page cache, the host keeps its own: what a
           file-backed disk gets for free from the host kernel.

Times are the guest's own (/proc/uptime around `dd if=/dev/vda
of=/dev/null bs=1M`, 10 ms resolution); after each timed read, `md5sum
/dev/vda` (from the guest's page cache) checks the bytes.  The image is `pagecheck dump --fill mixed` output (compresses
~2:1 with lz4), so the tmem cache holds it compressed.  Host memory held
for the cache: ebb's charge for the pool vs the image's pages in the host
page cache (fincore-style mincore on the file), after the cold read and at
the end.  ebb drops the page cache copy of what its cache holds.

Usage: bench/reread.py [--size 128M] [--mem 256M] [--reps 3] [--dir /var/tmp]
Needs root (drops the host page cache) and qemu-system-common.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "e2e"))
import ebbtest  # noqa: E402

MiB = 1 << 20


def drop_host_cache():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


# Timed inside the guest (its /proc/uptime, 10 ms resolution): the host
# only sees the console every 0.1 s.
READ = ("a=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/vda of=/dev/null bs=1M "
        "2>/dev/null; b=$(cut -d' ' -f1 /proc/uptime); echo \"took $a $b\"")


def guest_read_seconds(d, name):
    st, out = d.exec(name, READ)
    m = re.search(r"took ([\d.]+) ([\d.]+)", out)
    if st != 0 or not m:
        raise ebbtest.TestFailure("%s: read failed: %s" % (name, out))
    return float(m.group(2)) - float(m.group(1))


def timed_read(d, name, want):
    """Time a whole-disk read (dd to /dev/null: no checksum CPU in the
    time), then check the bytes with md5sum from the guest's page cache."""
    t = guest_read_seconds(d, name)
    st, out = d.exec(name, "md5sum /dev/vda")
    if st != 0 or want not in out:
        raise ebbtest.TestFailure("%s read wrong data: %s" % (name, out))
    return t


def cache_stats(d, name):
    for g in d.c.call("tmem")["guests"]:
        if g["name"] == name:
            for dv in g["devices"]:
                if dv["role"] == "disk":
                    return g, dv["cache"]
    raise ebbtest.TestFailure("no disk for %s" % name)


def one_rep(d, backend, img, want, a, rep):
    name = "%s%d" % (backend[0], rep)
    res = {}
    if backend == "ebb":
        d.run(name, a.mem, disk=img, disk_ro=True)
        q = None
    else:
        q = QsdImage(img, tempfile.mkdtemp(prefix="ebb-qsd-", dir=a.dir))
        d.run(name, a.mem, cmdline=q.cmdline())
    try:
        d.exec(name, "echo 3 > /proc/sys/vm/drop_caches")
        drop_host_cache()
        res["cold"] = timed_read(d, name, want)
        res["page_cache_cold"] = ebbtest.page_cache_bytes(img)
        d.exec(name, "echo 3 > /proc/sys/vm/drop_caches")
        drop_host_cache()
        res["reread"] = timed_read(d, name, want)
        if backend == "ebb":
            g, c = cache_stats(d, name)
            res["hits"], res["misses"] = c["hits"], c["misses"]
            res["held"] = g["charged_bytes"]
        d.exec(name, "echo 3 > /proc/sys/vm/drop_caches")
        res["reread_warm"] = timed_read(d, name, want)
        res["page_cache"] = ebbtest.page_cache_bytes(img)
        if backend != "ebb":
            res["held"] = res["page_cache"]
        # The floor: the same read from the guest's own page cache.
        res["md5_ram"] = guest_read_seconds(d, name)
    finally:
        d.c.call("guest-stop", name=name, force=True)
        d.wait_until(lambda: d.guest(name)["state"] in ("stopped", "failed"), 30,
                     "%s stopped" % name)
        if q:
            q.close()
    print("  %-4s rep %d: cold %.2f s, reread %.2f s, reread (host cache warm) "
          "%.2f s, from the guest page cache %.2f s, held %d MiB, host page "
          "cache after the cold read %d MiB%s" % (
              backend, rep, res["cold"], res["reread"], res["reread_warm"],
              res["md5_ram"], res["held"] // MiB, res["page_cache_cold"] // MiB,
              ", hits %d misses %d" % (res["hits"], res["misses"])
              if "hits" in res else ""), flush=True)
    return res


class QsdImage(ebbtest.Qsd):
    """ebbtest.Qsd exporting an existing image read-only."""

    def __init__(self, image, workdir, timeout=10):  # noqa: super not called
        self.dir = workdir
        self.path = image
        self.sock = os.path.join(workdir, "vhost-user-blk.sock")
        self.log = os.path.join(workdir, "qsd.log")
        blockdev = "driver=file,node-name=disk,filename=%s,cache.direct=off" % image
        export = ("type=vhost-user-blk,id=disk0,node-name=disk,num-queues=1,"
                  "addr.type=unix,addr.path=%s,writable=off" % self.sock)
        self.argv = [ebbtest.qsd_binary(), "--blockdev", blockdev, "--export", export]
        self.logf = open(self.log, "w")
        self.proc = subprocess.Popen(self.argv, stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.time() > deadline:
                raise ebbtest.TestFailure("qsd did not start: %s" % open(self.log).read())
            time.sleep(0.02)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.logf.close()
        for f in (self.log, self.sock):
            if os.path.exists(f):
                os.unlink(f)
        os.rmdir(self.dir)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="256M")
    p.add_argument("--mem", default="512M")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--dir", default="/var/tmp", help="a disk filesystem for the image")
    a = p.parse_args()
    a.size_s = a.size
    a.size = ebbtest.parse_size(a.size)
    a.mem = ebbtest.parse_size(a.mem)
    work = tempfile.mkdtemp(prefix="ebb-reread-", dir=a.dir)
    img = os.path.join(work, "data.img")
    pc = os.path.join(ebbtest.build_dir(), "guest", "pagecheck")
    with open(img, "wb") as f:
        subprocess.run([pc, "dump", a.size_s, "9", "--fill", "mixed"], stdout=f,
                       check=True)
    want = subprocess.run(["md5sum", img], capture_output=True, text=True,
                          check=True).stdout.split()[0]
    print("reread: %s image (pagecheck dump --fill mixed), guests of %d MiB, %d reps"
          % (a.size_s, a.mem // MiB, a.reps), flush=True)
    t0 = time.time()
    runs = {"ebb": [], "qsd": []}
    with ebbtest.Ebbd(budget="4G") as d:
        for rep in range(a.reps):
            for backend in ("ebb", "qsd"):
                runs[backend].append(one_rep(d, backend, img, want, a, rep))
    os.unlink(img)
    os.rmdir(work)

    def med(b, k):
        return statistics.median(r[k] for r in runs[b])

    print("\nReproduce: `python3 bench/reread.py %s`  (%.0f s)\n"
          % (" ".join(sys.argv[1:]), time.time() - t0))
    print("Whole-disk read (`dd if=/dev/vda of=/dev/null bs=1M`) of a %s image by "
          "a %d MiB guest, medians of %d reps (s; the same read from the guest's "
          "own page cache: %.2f s):\n"
          % (a.size_s, a.mem // MiB, a.reps, med("ebb", "md5_ram")))
    print("| disk | cold (host cache dropped) | re-read after both drop caches | "
          "re-read, host page cache kept | tmem cache (MiB charged) | "
          "host page cache of the image after the cold read (MiB) | "
          "at the end (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print("| ebb cachedisk (shared tmem cache) | %.2f | %.2f | %.2f | %d | %d | %d |"
          % (med("ebb", "cold"), med("ebb", "reread"), med("ebb", "reread_warm"),
             med("ebb", "held") // MiB, med("ebb", "page_cache_cold") // MiB,
             med("ebb", "page_cache") // MiB))
    print("| qemu-storage-daemon, file | %.2f | %.2f | %.2f | – | %d | %d |"
          % (med("qsd", "cold"), med("qsd", "reread"), med("qsd", "reread_warm"),
             med("qsd", "page_cache_cold") // MiB, med("qsd", "page_cache") // MiB))
    print("\nebb re-read: %d pages from the cache, %d from the file (median)."
          % (med("ebb", "hits"), med("ebb", "misses")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
