#!/usr/bin/env python3
"""What a Prometheus scrape of ebbd costs, against the number of guests.

Guests are launched with --external (ebbd serves their devices but starts
no process), so hundreds fit on a small machine; the page has the same
rows for them as for booted guests.  Per guest count: the page's size,
ebbd's own build time for it (ebb_metrics_collect_seconds, read from the
next page) and the whole HTTP round trip seen by a client, medians of 50
scrapes.  Meanwhile a control command (info) is timed: what the loop's
other clients wait while scrapes run back to back.

    EBB_BUILD=build python3 bench/metrics_scrape.py [--counts 1,16,64,200]
"""
import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from ebbtest import Ebbd, MiB  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def scrape(port):
    t0 = time.perf_counter()
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        body = r.read().decode()
    return time.perf_counter() - t0, body


def collect_seconds(body):
    for line in body.splitlines():
        if line.startswith("ebb_metrics_collect_seconds "):
            return float(line.split()[1])
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="1,16,64,200")
    ap.add_argument("--scrapes", type=int, default=50)
    a = ap.parse_args()
    port = free_port()
    print("| guests | page bytes | build p50 (ms) | HTTP round trip p50 (ms) | "
          "info during scrapes p50 / max (ms) |")
    print("|---:|---:|---:|---:|---:|")
    with Ebbd(budget="64G", extra_args=["--metrics-port", str(port)]) as d:
        have = 0
        for n in [int(x) for x in a.counts.split(",")]:
            while have < n:
                d.c.call("guest-run", name="g%d" % have, mem=64 * MiB, external=True)
                have += 1
            builds, trips = [], []
            size = 0
            stop = False
            info_ms = []

            def poke():
                c = d.client()
                while not stop:
                    t0 = time.perf_counter()
                    c.call("info")
                    info_ms.append((time.perf_counter() - t0) * 1e3)
                    time.sleep(0.005)
                c.close()
            th = threading.Thread(target=poke)
            th.start()
            for _ in range(a.scrapes):
                t, body = scrape(port)
                trips.append(t * 1e3)
                size = len(body)
                c = collect_seconds(body)
                if c is not None:
                    builds.append(c * 1e3)
            stop = True
            th.join()
            print("| %d | %d | %.3f | %.2f | %.2f / %.2f |" % (
                n, size, statistics.median(builds), statistics.median(trips),
                statistics.median(info_ms), max(info_ms)))


if __name__ == "__main__":
    main()
